"""Validation of an invoice's backing data: batches of whole records cut where the structural pass
noted, tokenised in one call per kind, assessed (in this process or in worker processes), settled
for duplicates and then for the pathway checks in line order, bulk inserted with their spells,
progress after each batch.

One invoice of a chain (every invoice addressed to one commissioner, whatever its provider) is
validated at a time, in submission order (`repository.try_claim`), so duplicate detection and the
pathway checks (which look back across providers) stay exact however many submissions arrive
together, in one process or several. Synchronous submissions run here in the request's worker thread;
large ones run on `ValidationWorker`, a thread of the service process, with their batches
assessed in its `ValidationPool` of worker processes when one is configured."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.config import Settings
from cef_api.invoices import repository
from cef_api.invoices.audit import record_invoice_event
from cef_api.invoices.batches import (
    AssessedBatch,
    TokenisedBatch,
    assess_batch,
    settle_batch,
    tokenise_batch,
)
from cef_api.invoices.exceptions import MAX_PENNIES, AmountTooLarge
from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.invoices.schemas import pennies
from cef_api.invoices.workers import ValidationPool
from cef_api.locks import transaction_lock
from cef_api.reference import repository as reference_repository
from cef_api.reference.parsers import DATASETS
from cef_api.reference.service import ReferenceSnapshot, prune_superseded
from cef_api.spool import EncryptedSpool
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import BackingSurvey, split_backing_batches, survey_backing_data
from cef_api.validation.engine import SummaryAccumulator
from cef_api.validation.prepared import PREPARED_COLUMNS
from cef_api.validation.rules.pathway import InMemorySpellIndex
from cef_api.validation.types import InvoiceHeader
from cef_common.auth import Principal

log = structlog.get_logger(__name__)

SERVICE_PRINCIPAL = Principal(sub="cef-api", issuer="cef-api", scopes=frozenset(), client="cef-api")
RESTART_REASON = (
    "the service restarted while this invoice was being validated; its backing data was held only "
    "under a key that did not survive the restart, so nothing of it was kept: submit the invoice again"
)


class AttemptSuperseded(Exception):
    """This attempt at an invoice's validation is no longer the invoice's own: its job was restarted
    on another node (this one was thought dead: a long pause, a frozen VM), or the invoice was failed
    meanwhile. The attempt has written nothing since and must write nothing more."""

    def __init__(self, seq: int, attempt: int) -> None:
        super().__init__(f"invoice {seq}: validation attempt {attempt} was superseded")
        self.seq = seq
        self.attempt = attempt


# `invoice.attempt` (migration 0010): the number of the invoice's current validation attempt. Not a
# field of the Invoice model: only this module reads or writes it, in SQL next to the row it fences.
ATTEMPT = sa.column("attempt", sa.Integer)
NEXT_ATTEMPT = sa.text(
    "UPDATE invoice SET attempt = attempt + 1, lines_done = 0 WHERE seq = :seq AND status = :status"
    " RETURNING attempt"
)


def fenced_update(session: Session, seq: int, attempt: int, **values: Any) -> None:
    """Updates the invoice row only while it is `validating` under `attempt`; otherwise rolls back
    what the transaction wrote and raises AttemptSuperseded. Every write of an attempt starts with it:
    the update holds the row's lock until commit, and a restart bumps the attempt on that same row
    before it deletes the attempt's lines, so either the restart waits for this transaction and then
    deletes what it wrote, or it committed first and this update matches no row (on SQLite writers
    are serialised on the whole database, to the same effect)."""
    result = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(repository.invoice_t)
            .where(
                repository.IV.seq == seq,
                repository.IV.status == InvoiceStatus.VALIDATING,
                ATTEMPT == attempt,
            )
            .values(**values)
        ),
    )
    if result.rowcount != 1:
        session.rollback()
        raise AttemptSuperseded(seq, attempt)


class JobDuplicateIndex:
    """The duplicate-key digests of one validation job: this invoice's countable lines so far, plus
    those of earlier invoices of the chain, either all read at the start (a short history) or read
    per batch for the batch's candidate keys (a long one)."""

    def __init__(self, *, per_batch: bool, earlier: set[str] | None = None) -> None:
        self.per_batch = per_batch
        self.keys: set[str] = earlier or set()

    def extend(self, digests: set[str]) -> None:
        self.keys.update(digests)

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


def survey_lines(spool: EncryptedSpool, batch_lines: int) -> BackingSurvey:
    """The structural pass: reads the whole file; BackingDataError (422) before anything is stored.

    Every submission passes it before its invoice exists, so validation reads the same (encrypted,
    immutable) spool again without repeating its whole-file checks, cut into batches where this
    pass noted."""
    return survey_backing_data(spool.chunks(), batch_lines=batch_lines)


def header_of(invoice: Invoice) -> InvoiceHeader:
    return InvoiceHeader(
        invoice_number=invoice.invoice_number,
        provider_code=invoice.provider_code,
        commissioner_code=invoice.commissioner_code,
        invoice_date=invoice.invoice_date,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
    )


STAGES_AHEAD = 2


def _inline_batches(
    spool: EncryptedSpool,
    survey: BackingSurvey,
    *,
    session: Session,
    seq: int,
    header: InvoiceHeader,
    snapshot: ReferenceSnapshot,
    tokeniser: TokeniserClient,
) -> Iterator[AssessedBatch]:
    """Batches assessed in this process: parsed, prepared and tokenised ahead in a thread, so the
    tokeniser's work (another process) overlaps this one's validation and inserts."""
    layout, batches = split_backing_batches(spool.chunks(), survey, PREPARED_COLUMNS)

    def stage() -> TokenisedBatch | None:
        batch = next(batches, None)
        if batch is None:
            return None
        return tokenise_batch(
            batch,
            layout,
            tokeniser=tokeniser,
            key_version=snapshot.key_version,
            dob_key_version=snapshot.dob_key_version,
        )

    # Two batches ahead: while this thread waits for SQLite (which releases the GIL) the stage
    # thread goes on parsing rather than idling behind a finished batch. Stages run one at a time
    # in order; after the last batch the next finds the reader spent (None), and on a failure the
    # one queued behind it is cancelled or its batch dropped.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-stage")
    try:
        ahead: deque[Future[TokenisedBatch | None]] = deque(pool.submit(stage) for _ in range(STAGES_AHEAD))
        while (current := ahead.popleft().result()) is not None:
            ahead.append(pool.submit(stage))
            tokens = sorted({t for t in current.line_tokens if t is not None})
            t0 = time.perf_counter()
            reference = snapshot.for_patients(session, tokens)
            prefetch = time.perf_counter() - t0
            assessed = assess_batch(current, seq=seq, header=header, reference=reference)
            assessed.seconds["prefetch_s"] = prefetch
            yield assessed
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class JobSpellIndex:
    """The look-back of checks 14 and 15 for one validation job, as JobDuplicateIndex is for check 9:
    the spells billed to the invoice's commissioner, either all read at the start (a short history)
    and kept in memory with this invoice's own as they settle, or read per batch for the batch's
    patients and dates only (a long one), when this invoice's earlier batches are read back too."""

    def __init__(self, *, commissioner_code: str, per_batch: bool, spells: InMemorySpellIndex) -> None:
        self.commissioner_code = commissioner_code.upper()
        self.per_batch = per_batch
        self.spells = spells

    @classmethod
    def for_chain(cls, session: Session, invoice: Invoice, memory_rows: int) -> JobSpellIndex:
        commissioner = invoice.commissioner_code.upper()
        earlier = repository.chain_spell_count(session, commissioner)
        if earlier > memory_rows:
            return cls(commissioner_code=commissioner, per_batch=True, spells=InMemorySpellIndex())
        spells = InMemorySpellIndex()
        if earlier:
            for token, admission, discharge in repository.chain_spells(session, commissioner):
                spells.add(commissioner, token, (admission, discharge))
        return cls(commissioner_code=commissioner, per_batch=False, spells=spells)

    def for_batch(self, session: Session, batch: AssessedBatch) -> InMemorySpellIndex:
        """The index to settle `batch` against (it grows with the batch's own spells)."""
        if not self.per_batch:
            return self.spells
        spells = InMemorySpellIndex()
        if batch.pathway:
            commissioner = self.commissioner_code
            after = min(fact[2] for fact in batch.pathway)
            before = max(fact[3] or fact[2] for fact in batch.pathway)
            found = repository.earlier_spells(
                session, commissioner, batch.patient_tokens, after=after, before=before
            )
            for token, admission, discharge in found:
                spells.add(commissioner, token, (admission, discharge))
        return spells


def _settle_and_store(
    session: Session,
    *,
    seq: int,
    attempt: int,
    done: int,
    batch: AssessedBatch,
    duplicates: JobDuplicateIndex,
    spells: JobSpellIndex,
    summary: SummaryAccumulator,
) -> int:
    # The fence first: the batch's lines go in only while this attempt still owns the invoice.
    fenced_update(session, seq, attempt, lines_done=done + batch.lines)
    t0 = time.perf_counter()
    if duplicates.per_batch:
        candidates = sorted({c for c in batch.candidates if c is not None})
        duplicates.extend(repository.existing_dup_keys(session, candidates))
    settle_batch(
        batch,
        keys=duplicates.keys,
        commissioner_code=spells.commissioner_code,
        spells=spells.for_batch(session, batch),
        summary=summary,
    )
    t1 = time.perf_counter()
    repository.insert_lines(session, batch.rows())
    t2 = time.perf_counter()
    repository.insert_spells(session, batch.spell_rows)
    log.info(
        "validation_batch",
        invoice_seq=seq,
        lines=batch.lines,
        **{k: round(v, 3) for k, v in batch.seconds.items()},
        settle_s=round(t1 - t0, 3),
        insert_s=round(t2 - t1, 3),
        insert_spells_s=round(time.perf_counter() - t2, 3),
        spells=len(batch.spell_rows),
    )
    return batch.lines


def _pin_reference(session: Session, seq: int, attempt: int, memory_rows: int) -> ReferenceSnapshot:
    """Records the versions in force on the invoice (which keeps a concurrent load from pruning
    them) and reads them (the patients too when they fit in `memory_rows`); read again if a load
    replaced one in between."""
    for _ in range(5):
        # PostgreSQL: a load holds its dataset's lock until it commits, so pin under all of them.
        for dataset in DATASETS:
            transaction_lock(session, f"reference:{dataset}")
        versions = reference_repository.current_versions(session)
        pinned = {d: v.version for d, v in versions.items()}
        fenced_update(session, seq, attempt, reference_versions=json.dumps(pinned), lines_done=0)
        session.commit()
        if reference_repository.versions_exist(session, pinned):
            return ReferenceSnapshot.load(session, versions, memory_rows=memory_rows)
    raise RuntimeError("reference data kept changing while validation started")


def validate_invoice(
    engine: Engine,
    *,
    seq: int,
    spool: EncryptedSpool,
    survey: BackingSurvey,
    tokeniser: TokeniserClient,
    settings: Settings,
    attempt: int,
    pool: ValidationPool | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Validates a claimed invoice from scratch as its validation `attempt` (the number `claim` or
    `restart_invoice` returned); any failure leaves it `failed` with no lines. Once the attempt is
    superseded it raises AttemptSuperseded and writes nothing more (the invoice is its successor's).

    `survey` is the structural pass's (`survey_lines`); with a `pool`, batches are assessed in its
    worker processes, otherwise in this one."""
    try:
        _run(
            engine,
            seq=seq,
            attempt=attempt,
            spool=spool,
            survey=survey,
            tokeniser=tokeniser,
            settings=settings,
            pool=pool,
            on_batch=on_batch,
        )
    except AttemptSuperseded:
        log.warning("validation_attempt_superseded", invoice_seq=seq, attempt=attempt)
        raise
    except Exception as exc:
        log.warning("validation_failed", invoice_seq=seq, error=type(exc).__name__)
        reason = getattr(exc, "detail", None) or f"validation failed unexpectedly ({type(exc).__name__})"
        fail_invoice_or_retry(
            engine, seq, f"{reason}; nothing of this invoice was kept: submit it again", attempt=attempt
        )
        raise


def _run(
    engine: Engine,
    *,
    seq: int,
    attempt: int,
    spool: EncryptedSpool,
    survey: BackingSurvey,
    tokeniser: TokeniserClient,
    settings: Settings,
    pool: ValidationPool | None,
    on_batch: Callable[[int], None] | None,
) -> None:
    started = time.perf_counter()
    with (
        repository.job_connection(engine) as connection,
        Session(bind=connection, expire_on_commit=False) as session,
    ):
        invoice = repository.by_seq(session, seq)
        if invoice is None or invoice.status != InvoiceStatus.VALIDATING:
            raise AttemptSuperseded(seq, attempt)
        # An attempt starts from nothing, so no line of it counts twice as a duplicate (committed
        # with the reference versions below).
        fenced_update(session, seq, attempt, lines_done=0)
        repository.delete_lines(session, seq)
        # The workers read the patients themselves: here only the small datasets are needed.
        memory_rows = 0 if pool is not None else settings.reference_memory_rows
        snapshot = _pin_reference(session, seq, attempt, memory_rows)
        header = header_of(invoice)
        summary = SummaryAccumulator()
        done = 0
        duplicates = JobDuplicateIndex.for_chain(session, invoice, settings.reference_memory_rows)
        spells = JobSpellIndex.for_chain(session, invoice, settings.reference_memory_rows)
        batches = (
            pool.assessed_batches(spool, survey, seq=seq, header=header, versions=snapshot.versions)
            if pool is not None
            else _inline_batches(
                spool, survey, session=session, seq=seq, header=header, snapshot=snapshot, tokeniser=tokeniser
            )
        )
        for batch in batches:
            done += _settle_and_store(
                session,
                seq=seq,
                attempt=attempt,
                done=done,
                batch=batch,
                duplicates=duplicates,
                spells=spells,
                summary=summary,
            )
            session.commit()
            if on_batch is not None:
                on_batch(done)
        if done != survey.lines:
            raise RuntimeError(
                f"validation read {done} lines where the structural pass counted {survey.lines}"
            )
        result = summary.result()
        if pennies(result.claimed_amount) > MAX_PENNIES:
            raise AmountTooLarge("the invoice's claimed total")
        fenced_update(
            session,
            seq,
            attempt,
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
                "from": InvoiceStatus.VALIDATING,
                "to": InvoiceStatus.VALIDATED,
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
        "invoice_validated",
        invoice_seq=seq,
        lines=done,
        processes=pool.processes if pool is not None else 0,
        seconds=round(time.perf_counter() - started, 3),
    )


def fail_invoice(engine: Engine, seq: int, reason: str, *, attempt: int | None = None) -> None:
    """Failed cleanly: no line of it is kept, the reason says what to do, and it is audited.
    Only an invoice still being received or validated is failed: one already failed keeps its
    first reason, and one whose validation committed (and may since have been decided) is never
    undone by a failure noticed after that commit (e.g. reading it back while the database restarts).
    With `attempt`, only while that validation attempt still owns the invoice: a superseded attempt's
    failure must not fail the invoice its successor is validating."""
    with Session(engine) as session:
        invoice = repository.by_seq(session, seq)
        if invoice is None or invoice.status not in InvoiceStatus.OPEN:
            return
        before = invoice.status
        # The status first (it takes the row's lock), then the lines: a batch that committed just
        # before is deleted with the rest, and a fenced write after this finds the invoice failed.
        conditions = [repository.IV.seq == seq, repository.IV.status.in_(InvoiceStatus.OPEN)]
        if attempt is not None:
            conditions.append(ATTEMPT == attempt)
        result = cast(
            "sa.CursorResult[Any]",
            session.execute(
                sa.update(repository.invoice_t)
                .where(*conditions)
                .values(
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
            ),
        )
        if result.rowcount != 1:
            session.rollback()
            if attempt is not None:
                log.warning("validation_failure_superseded", invoice_seq=seq, attempt=attempt)
            return
        repository.delete_lines(session, seq)
        record_invoice_event(
            session,
            action="execute",
            type="invoice.validate",
            outcome="failure",
            principal=SERVICE_PRINCIPAL,
            entity_id=invoice.id,
            detail={"from": before, "to": InvoiceStatus.FAILED, "reason": reason[:300]},
        )
        session.commit()


FAIL_RETRY_SECONDS = 900.0


def _fail_as(engine: Engine, seq: int, reason: str, attempt: int | None) -> None:
    """`fail_invoice`, fenced on `attempt` when there is one (and called as before when not)."""
    if attempt is None:
        fail_invoice(engine, seq, reason)
    else:
        fail_invoice(engine, seq, reason, attempt=attempt)


def fail_invoice_or_retry(
    engine: Engine, seq: int, reason: str, *, within: float = FAIL_RETRY_SECONDS, attempt: int | None = None
) -> None:
    """Fails the invoice now or, when the database cannot be reached (e.g. it is restarting), from
    a thread that keeps trying for up to `within` seconds: an invoice left open would hold up every
    later invoice of its chain until the service restarted."""
    try:
        _fail_as(engine, seq, reason, attempt)
        return
    except Exception as exc:
        log.warning("invoice_fail_deferred", invoice_seq=seq, error=type(exc).__name__)

    def retry() -> None:
        deadline = time.monotonic() + within
        delay = 0.5
        while time.monotonic() < deadline:
            time.sleep(delay)
            try:
                _fail_as(engine, seq, reason, attempt)
                log.info("invoice_failed_after_retry", invoice_seq=seq)
                return
            except Exception as exc:  # the database is still away: try again later
                log.warning("invoice_fail_retry", invoice_seq=seq, error=type(exc).__name__)
                delay = min(delay * 2, 10.0)
        log.error("invoice_fail_gave_up", invoice_seq=seq)

    threading.Thread(target=retry, name=f"fail-invoice-{seq}", daemon=True).start()


def discard_invoice(engine: Engine, seq: int, reason: str) -> None:
    """Removes an invoice refused after it was stored (the tokeniser failed while the request was
    validating it), so that nothing of the submission is kept; the removal is audited against the
    invoice's id, beside its `invoice.submit` event."""
    with Session(engine) as session:
        invoice = repository.by_seq(session, seq)
        if invoice is None:
            return
        repository.delete_lines(session, seq)
        repository.delete_invoice(session, seq)
        record_invoice_event(
            session,
            action="delete",
            type="invoice.submit",
            outcome="failure",
            principal=SERVICE_PRINCIPAL,
            entity_id=invoice.id,
            detail={"reason": reason[:300], "stored": False},
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


def claim(engine: Engine, invoice: Invoice) -> int | None:
    """Marks a `received` invoice `validating` when its turn has come (no earlier invoice of its
    chain unfinished); returns the number of the validation attempt it starts (1 for a first claim),
    which every write of that attempt must show (`fenced_update`), or None when it is not its turn."""
    assert invoice.seq is not None
    attempt: int | None = None
    with Session(engine) as session:
        transaction_lock(session, repository.chain_lock_name(invoice.commissioner_code))
        if repository.try_claim(session, invoice.seq, invoice.commissioner_code):
            attempt = int(
                session.execute(
                    NEXT_ATTEMPT, {"seq": invoice.seq, "status": InvoiceStatus.VALIDATING}
                ).scalar_one()
            )
            record_invoice_event(
                session,
                action="execute",
                type="invoice.validate.start",
                principal=SERVICE_PRINCIPAL,
                entity_id=invoice.id,
                detail={"from": InvoiceStatus.RECEIVED, "to": InvoiceStatus.VALIDATING},
            )
        session.commit()
    return attempt


@dataclass
class _Job:
    invoice: Invoice
    spool: EncryptedSpool
    survey: BackingSurvey


class ValidationWorker:
    """Background validation in a thread of the service process, in submission order."""

    def __init__(
        self,
        engine: Engine,
        tokeniser: TokeniserClient,
        settings: Settings,
        *,
        pool: ValidationPool | None = None,
        poll: float = 0.2,
    ) -> None:
        self.engine = engine
        self.tokeniser = tokeniser
        self.settings = settings
        self.pool = pool
        self.poll = poll
        self._jobs: dict[int, _Job] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def enqueue(self, invoice: Invoice, spool: EncryptedSpool, survey: BackingSurvey) -> None:
        assert invoice.seq is not None
        with self._cond:
            self._jobs[invoice.seq] = _Job(invoice, spool, survey)
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
        if self.pool is not None:
            self.pool.close()
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
            attempt = claim(self.engine, job.invoice)
            if attempt is None:
                continue
            with self._cond:
                self._jobs.pop(seq, None)
            try:
                validate_invoice(
                    self.engine,
                    seq=seq,
                    spool=job.spool,
                    survey=job.survey,
                    tokeniser=self.tokeniser,
                    settings=self.settings,
                    attempt=attempt,
                    pool=self.pool,
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


# --- durable runners (cef_api.queue) ------------------------------------------------------------------

# The class id of the PostgreSQL advisory locks a request holds while it validates an invoice itself
# (the ASCII of "CEF1"); the object id is the invoice's seq.
REQUEST_LOCK_CLASS = 0x43454631
ABANDONED_REASON = (
    "the service process validating this invoice stopped before it finished; nothing of it was kept: "
    "submit the invoice again"
)


@contextmanager
def request_guard(engine: Engine, seq: int) -> Iterator[None]:
    """Held while a request validates its own invoice: on PostgreSQL a session advisory lock on a
    connection of its own, which the server releases if this process dies, so that another node can
    tell an abandoned synchronous validation (`request_abandoned`) from one still running."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(sa.select(sa.func.pg_advisory_lock(REQUEST_LOCK_CLASS, seq)))
        connection.commit()
        try:
            yield
        finally:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(REQUEST_LOCK_CLASS, seq)))
            connection.commit()


def request_abandoned(engine: Engine, seq: int) -> bool:
    """Whether no live process holds `request_guard` for the invoice (PostgreSQL only)."""
    with engine.connect() as connection:
        attempt = sa.select(sa.func.pg_try_advisory_lock(REQUEST_LOCK_CLASS, seq))
        got = bool(connection.execute(attempt).scalar())
        if got:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(REQUEST_LOCK_CLASS, seq)))
        connection.commit()
    return got


def restart_invoice(engine: Engine, seq: int) -> int | None:
    """Starts a claimed invoice again after its validation died (or was thought dead) mid-job, and
    returns the new attempt's number: in ONE transaction the invoice's attempt number goes up (which
    fences the old attempt out of every later write, `fenced_update`), the broken attempt's lines and
    spells go, its progress returns to 0 and the restart is audited, so no line of that attempt can
    ever count as an earlier line. None when the invoice is no longer `validating`."""
    with Session(engine) as session:
        invoice = repository.by_seq(session, seq)
        if invoice is None or invoice.status != InvoiceStatus.VALIDATING:
            return None
        # The row's lock first: an old attempt's batch in flight commits before this goes on (and
        # its lines are deleted below), or finds the new number and writes nothing.
        found = session.execute(NEXT_ATTEMPT, {"seq": seq, "status": InvoiceStatus.VALIDATING}).scalar()
        if found is None:
            session.rollback()
            return None
        attempt = int(found)
        repository.delete_lines(session, seq)
        record_invoice_event(
            session,
            action="execute",
            type="invoice.validate.restart",
            principal=SERVICE_PRINCIPAL,
            entity_id=invoice.id,
            detail={"attempt": attempt, "reason": "the node validating it stopped"},
        )
        session.commit()
    log.warning("validation_restarted", invoice_seq=seq, attempt=attempt)
    return attempt
