"""Validation of an invoice's backing data: streaming parse, batches of lines tokenised in one
call per kind, reference rows prefetched per batch, bulk inserts, progress after each batch.

One invoice of a chain (same provider and commissioner) is validated at a time, in submission
order (`repository.try_claim`), so duplicate detection across invoices stays exact however many
submissions arrive together. Synchronous submissions run here in the request's worker thread;
large ones run on `ValidationWorker`, a thread of the service process."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import islice
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.config import Settings
from cef_api.invoices import repository
from cef_api.invoices.audit import record_invoice_event
from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.invoices.schemas import pennies
from cef_api.locks import transaction_lock
from cef_api.reference import repository as reference_repository
from cef_api.reference.parsers import DATASETS
from cef_api.reference.service import ReferenceSnapshot, prune_superseded
from cef_api.spool import EncryptedSpool
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import count_backing_data
from cef_api.validation.engine import PreparedLine, SummaryAccumulator, validate_line
from cef_api.validation.prepared import prepare_backing_data
from cef_api.validation.types import DuplicateKey, InvoiceHeader, LineOutcome
from cef_common.auth import Principal

log = structlog.get_logger(__name__)

SERVICE_PRINCIPAL = Principal(sub="cef-api", issuer="cef-api", scopes=frozenset(), client="cef-api")
RESTART_REASON = (
    "the service restarted while this invoice was being validated; its backing data was held only "
    "under a key that did not survive the restart, so nothing of it was kept: submit the invoice again"
)


def dup_digest(key: DuplicateKey) -> str:
    """The stored form of a duplicate key: equal keys give equal digests, nothing else is kept."""
    text = "|".join(
        (
            key.provider_code.upper(),
            key.commissioner_code.upper(),
            key.nhs_token,
            key.activity_date.isoformat(),
            key.hrg_code.upper(),
            key.point_of_delivery.upper(),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class JobDuplicateIndex:
    """`DuplicateIndex` of one validation job: the digests of this invoice's countable lines so far,
    plus those of earlier invoices of the chain, either all read at the start (a short history) or
    read per batch for the batch's candidate keys (a long one)."""

    def __init__(self, *, per_batch: bool, earlier: set[str] | None = None) -> None:
        self.per_batch = per_batch
        self._keys: set[str] = earlier or set()
        # The engine asks about a key, then adds it, then the line is stored with its digest:
        # one digest serves all three.
        self._last: tuple[DuplicateKey | None, str] = (None, "")
        # `dup_digest`'s text in parts: the invoice's codes and the dates repeat on every line.
        self._prefixes: dict[tuple[str, str], str] = {}
        self._dates: dict[date, str] = {}

    def digest(self, key: DuplicateKey) -> str:
        """`dup_digest(key)`, its repeated parts built once."""
        last_key, last_digest = self._last
        if key is last_key:
            return last_digest
        codes = (key.provider_code, key.commissioner_code)
        prefix = self._prefixes.get(codes)
        if prefix is None:
            prefix = self._prefixes[codes] = f"{codes[0].upper()}|{codes[1].upper()}|"
        day = self._dates.get(key.activity_date)
        if day is None:
            day = self._dates[key.activity_date] = key.activity_date.isoformat()
        text = f"{prefix}{key.nhs_token}|{day}|{key.hrg_code.upper()}|{key.point_of_delivery.upper()}"
        digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        self._last = (key, digest)
        return digest

    def __contains__(self, key: DuplicateKey) -> bool:
        return self.digest(key) in self._keys

    def add(self, key: DuplicateKey) -> None:
        self._keys.add(self.digest(key))

    def extend(self, digests: set[str]) -> None:
        self._keys.update(digests)

    @classmethod
    def for_chain(cls, session: Session, invoice: Invoice, memory_rows: int) -> JobDuplicateIndex:
        assert invoice.seq is not None
        earlier = repository.chain_dup_key_count(
            session, invoice.provider_code, invoice.commissioner_code, invoice.seq
        )
        if earlier > memory_rows:
            return cls(per_batch=True)
        keys = (
            repository.chain_dup_keys(session, invoice.provider_code, invoice.commissioner_code, invoice.seq)
            if earlier
            else set()
        )
        return cls(per_batch=False, earlier=keys)


def count_lines(spool: EncryptedSpool) -> int:
    """The structural pass: reads the whole file; BackingDataError (422) before anything is stored.

    Every submission passes it before its invoice exists, so validation reads the same (encrypted,
    immutable) spool again without repeating its whole-file checks."""
    return count_backing_data(spool.chunks())


def _candidate_key(line: PreparedLine, header: InvoiceHeader, nhs_token: str | None) -> DuplicateKey | None:
    if (
        line.malformed
        or nhs_token is None
        or line.activity_date is None
        or line.hrg_code is None
        or line.point_of_delivery is None
    ):
        return None
    return DuplicateKey(
        provider_code=header.provider_code,
        commissioner_code=header.commissioner_code,
        nhs_token=nhs_token,
        activity_date=line.activity_date,
        hrg_code=line.hrg_code,
        point_of_delivery=line.point_of_delivery,
    )


class _Dates(dict[date, str]):
    """ISO text of the activity dates of one job (stored as such: see repository.insert_lines)."""

    def __missing__(self, day: date) -> str:
        value = self[day] = day.isoformat()
        return value


def _row(
    seq: int,
    outcome: LineOutcome,
    duplicates: JobDuplicateIndex,
    iso_dates: _Dates | None = None,
) -> tuple[Any, ...]:
    """A line as `repository.LINE_COLUMNS` orders it."""
    to_iso = iso_dates if iso_dates is not None else _Dates()
    expected, claimed, key = outcome.expected_amount, outcome.claimed_amount, outcome.duplicate_key
    activity_date = outcome.activity_date
    return (
        seq,
        outcome.line_no,
        outcome.line_ref,
        outcome.outcome.value,
        # Reasons are StrEnums sorted by value (LineOutcome's contract): joined, they are their values.
        ";".join(outcome.reasons),
        outcome.responsible_commissioner,
        pennies(expected) if expected is not None else None,
        pennies(claimed) if claimed is not None else None,
        outcome.nhs_token,
        to_iso[activity_date] if activity_date is not None else None,
        outcome.hrg_code,
        outcome.point_of_delivery,
        outcome.service_code,
        duplicates.digest(key) if key is not None else None,
    )


def header_of(invoice: Invoice) -> InvoiceHeader:
    return InvoiceHeader(
        invoice_number=invoice.invoice_number,
        provider_code=invoice.provider_code,
        commissioner_code=invoice.commissioner_code,
        invoice_date=invoice.invoice_date,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
    )


@dataclass
class _TokenisedBatch:
    """A batch after the first stage: lines prepared and their identifiers turned into tokens."""

    prepared: list[PreparedLine]
    line_tokens: list[str | None]
    dob_tokens: dict[date, str | None]
    seconds: float


STAGES_AHEAD = 2


def _tokenised_batches(
    spool: EncryptedSpool, *, size: int, snapshot: ReferenceSnapshot, tokeniser: TokeniserClient
) -> Iterator[_TokenisedBatch]:
    """Parse, prepare and tokenise batches ahead in a thread, so the tokeniser's work (another
    process) overlaps this one's validation and inserts. Identifiers live only in these objects."""
    # `count_lines` refused a repeated line_ref before the invoice existed: no need to check again.
    lines = prepare_backing_data(spool.chunks(), check_repeats=False)

    def stage() -> _TokenisedBatch | None:
        t0 = time.perf_counter()
        prepared = list(islice(lines, size))
        if not prepared:
            return None
        nhs_values = sorted({p.nhs_number for p in prepared if p.nhs_number is not None})
        dob_dates = sorted({p.date_of_birth for p in prepared if p.date_of_birth is not None})
        nhs_tokens: dict[str, str | None] = {}
        dob_tokens: dict[date, str | None] = {}
        if nhs_values:
            got = tokeniser.tokenise("nhs_number", nhs_values, key_version=snapshot.key_version)
            nhs_tokens = dict(zip(nhs_values, got.tokens, strict=True))
        if dob_dates:
            dob_values = [d.isoformat() for d in dob_dates]
            got = tokeniser.tokenise("date_of_birth", dob_values, key_version=snapshot.dob_key_version)
            dob_tokens = dict(zip(dob_dates, got.tokens, strict=True))
        line_tokens = [nhs_tokens.get(p.nhs_number) if p.nhs_number is not None else None for p in prepared]
        return _TokenisedBatch(prepared, line_tokens, dob_tokens, time.perf_counter() - t0)

    # Two batches ahead: while this thread waits for SQLite (which releases the GIL) the stage
    # thread goes on parsing rather than idling behind a finished batch. Stages run one at a time
    # in order; after the last batch the next finds the reader spent (None), and on a failure the
    # one queued behind it is cancelled or its batch dropped.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-stage")
    try:
        ahead: deque[Future[_TokenisedBatch | None]] = deque(pool.submit(stage) for _ in range(STAGES_AHEAD))
        while (current := ahead.popleft().result()) is not None:
            ahead.append(pool.submit(stage))
            yield current
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _validate_batch(
    session: Session,
    *,
    seq: int,
    batch: _TokenisedBatch,
    header: InvoiceHeader,
    snapshot: ReferenceSnapshot,
    duplicates: JobDuplicateIndex,
    summary: SummaryAccumulator,
) -> None:
    t1 = time.perf_counter()
    prepared, line_tokens, dob_tokens = batch.prepared, batch.line_tokens, batch.dob_tokens
    reference = snapshot.for_patients(session, sorted({t for t in line_tokens if t is not None}))
    if duplicates.per_batch:
        candidates = {
            dup_digest(k)
            for p, t in zip(prepared, line_tokens, strict=True)
            if (k := _candidate_key(p, header, t)) is not None
        }
        duplicates.extend(repository.existing_dup_keys(session, sorted(candidates)))
    t2 = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    append, add, iso_dates = rows.append, summary.add, _Dates()
    for line, nhs_token in zip(prepared, line_tokens, strict=True):
        dob_token = dob_tokens.get(line.date_of_birth) if line.date_of_birth is not None else None
        outcome = validate_line(
            line,
            nhs_token=nhs_token,
            dob_token=dob_token,
            header=header,
            reference=reference,
            duplicates=duplicates,
        )
        add(outcome)
        append(_row(seq, outcome, duplicates, iso_dates))
    t3 = time.perf_counter()
    repository.insert_lines(session, rows)
    log.info(
        "validation_batch",
        invoice_seq=seq,
        lines=len(prepared),
        prepare_and_tokenise_s=round(batch.seconds, 3),
        prefetch_s=round(t2 - t1, 3),
        validate_s=round(t3 - t2, 3),
        insert_s=round(time.perf_counter() - t3, 3),
    )


def _pin_reference(session: Session, seq: int, settings: Settings) -> ReferenceSnapshot:
    """Records the versions in force on the invoice (which keeps a concurrent load from pruning
    them) and reads them; read again if a load replaced one in between."""
    for _ in range(5):
        # PostgreSQL: a load holds its dataset's lock until it commits, so pin under all of them.
        for dataset in DATASETS:
            transaction_lock(session, f"reference:{dataset}")
        versions = reference_repository.current_versions(session)
        pinned = {d: v.version for d, v in versions.items()}
        repository.update_invoice(session, seq, reference_versions=json.dumps(pinned), lines_done=0)
        session.commit()
        if reference_repository.versions_exist(session, pinned):
            return ReferenceSnapshot.load(session, versions, memory_rows=settings.reference_memory_rows)
    raise RuntimeError("reference data kept changing while validation started")


def validate_invoice(
    engine: Engine,
    *,
    seq: int,
    spool: EncryptedSpool,
    tokeniser: TokeniserClient,
    settings: Settings,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Validates a claimed invoice from scratch; any failure leaves it `failed` with no lines."""
    try:
        _run(engine, seq=seq, spool=spool, tokeniser=tokeniser, settings=settings, on_batch=on_batch)
    except Exception as exc:
        log.warning("validation_failed", invoice_seq=seq, error=type(exc).__name__)
        reason = getattr(exc, "detail", None) or f"validation failed unexpectedly ({type(exc).__name__})"
        fail_invoice(engine, seq, f"{reason}; nothing of this invoice was kept: submit it again")
        raise


def _run(
    engine: Engine,
    *,
    seq: int,
    spool: EncryptedSpool,
    tokeniser: TokeniserClient,
    settings: Settings,
    on_batch: Callable[[int], None] | None,
) -> None:
    started = time.perf_counter()
    with (
        repository.job_connection(engine) as connection,
        Session(bind=connection, expire_on_commit=False) as session,
    ):
        invoice = repository.by_seq(session, seq)
        assert invoice is not None
        assert invoice.status == InvoiceStatus.VALIDATING
        # A restarted job starts from nothing, so no line of it counts twice as a duplicate.
        repository.delete_lines(session, seq)
        snapshot = _pin_reference(session, seq, settings)
        header = header_of(invoice)
        summary = SummaryAccumulator()
        done = 0
        batches = _tokenised_batches(
            spool, size=settings.validation_batch_lines, snapshot=snapshot, tokeniser=tokeniser
        )
        duplicates = JobDuplicateIndex.for_chain(session, invoice, settings.reference_memory_rows)
        for batch in batches:
            _validate_batch(
                session,
                seq=seq,
                batch=batch,
                header=header,
                snapshot=snapshot,
                duplicates=duplicates,
                summary=summary,
            )
            done += len(batch.prepared)
            repository.update_invoice(session, seq, lines_done=done)
            session.commit()
            if on_batch is not None:
                on_batch(done)
        result = summary.result()
        repository.update_invoice(
            session,
            seq,
            status=InvoiceStatus.VALIDATED,
            lines_done=done,
            lines=result.lines,
            valid=result.valid,
            query=result.query,
            rejected=result.rejected,
            claimed_pennies=pennies(result.claimed_amount),
            validated_pennies=pennies(result.validated_amount),
            validated_at=datetime.now(UTC),
        )
        record_invoice_event(
            session,
            action="execute",
            type="invoice.validate",
            outcome="success",
            principal=SERVICE_PRINCIPAL,
            entity_id=invoice.id,
            count=result.lines,
            detail={
                "provider_code": invoice.provider_code,
                "commissioner_code": invoice.commissioner_code,
                "valid": result.valid,
                "query": result.query,
                "rejected": result.rejected,
                "reference_versions": snapshot.versions,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        prune_superseded(session)
        session.commit()
    log.info(
        "invoice_validated", invoice_seq=seq, lines=done, seconds=round(time.perf_counter() - started, 3)
    )


def fail_invoice(engine: Engine, seq: int, reason: str) -> None:
    """Failed cleanly: no line of it is kept, the reason says what to do, and it is audited."""
    with Session(engine) as session:
        invoice = repository.by_seq(session, seq)
        if invoice is None:
            return
        repository.delete_lines(session, seq)
        repository.update_invoice(
            session,
            seq,
            status=InvoiceStatus.FAILED,
            failure_reason=reason[:1000],
            lines_done=0,
            lines=0,
            valid=0,
            query=0,
            rejected=0,
            claimed_pennies=0,
            validated_pennies=0,
        )
        record_invoice_event(
            session,
            action="execute",
            type="invoice.validate",
            outcome="failure",
            principal=SERVICE_PRINCIPAL,
            entity_id=invoice.id,
            detail={"reason": reason[:300]},
        )
        session.commit()


def recover_interrupted(engine: Engine) -> int:
    """On start: every invoice left `received` or `validating` by an earlier process is failed."""
    with Session(engine) as session:
        stuck = [i.seq for i in repository.open_invoices(session) if i.seq is not None]
    for seq in stuck:
        fail_invoice(engine, seq, RESTART_REASON)
    if stuck:
        log.warning("interrupted_validations_failed", count=len(stuck))
    return len(stuck)


def claim(engine: Engine, invoice: Invoice) -> bool:
    assert invoice.seq is not None
    with Session(engine) as session:
        transaction_lock(session, f"chain:{invoice.provider_code}:{invoice.commissioner_code}")
        claimed = repository.try_claim(session, invoice.seq, invoice.provider_code, invoice.commissioner_code)
        session.commit()
    return claimed


@dataclass
class _Job:
    invoice: Invoice
    spool: EncryptedSpool


class ValidationWorker:
    """Background validation in a thread of the service process, in submission order."""

    def __init__(
        self, engine: Engine, tokeniser: TokeniserClient, settings: Settings, *, poll: float = 0.2
    ) -> None:
        self.engine = engine
        self.tokeniser = tokeniser
        self.settings = settings
        self.poll = poll
        self._jobs: dict[int, _Job] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def enqueue(self, invoice: Invoice, spool: EncryptedSpool) -> None:
        assert invoice.seq is not None
        with self._cond:
            self._jobs[invoice.seq] = _Job(invoice, spool)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="validation-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        # What is left is failed cleanly on the next start (its spool key dies with us).
        with self._cond:
            for job in self._jobs.values():
                job.spool.delete()
            self._jobs.clear()

    def run_once(self) -> bool:
        """Validates the first claimable queued invoice; False when none could be claimed."""
        with self._cond:
            queued = sorted(self._jobs.items())
        for seq, job in queued:
            if not claim(self.engine, job.invoice):
                continue
            with self._cond:
                self._jobs.pop(seq, None)
            try:
                validate_invoice(
                    self.engine, seq=seq, spool=job.spool, tokeniser=self.tokeniser, settings=self.settings
                )
            except Exception:  # already failed and audited by validate_invoice; the worker goes on
                pass
            finally:
                job.spool.delete()
            return True
        return False

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                if not self._jobs:
                    self._cond.wait(self.poll * 5)
                    continue
            try:
                worked = self.run_once()
            except Exception as exc:  # the worker must outlive any failure
                log.error("validation_worker_error", error=type(exc).__name__)
                worked = False
            if not worked:
                with self._cond:
                    self._cond.wait(self.poll)
