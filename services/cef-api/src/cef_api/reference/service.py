"""Loading reference datasets (checked whole, tokenised in bulk, replaced atomically as a new
version) and reading them back for validation."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.locks import transaction_lock
from cef_api.reference import repository
from cef_api.reference.fingerprints import Fingerprints, Recognised, file_digest, one_record_a_line
from cef_api.reference.models import ReferenceVersion
from cef_api.reference.parsers import DATASETS, ROW_TYPES, ReferenceFileError, parse_chunks
from cef_api.tokeniser_client import Kind, TokeniserClient
from cef_api.validation.commissioning import CommissioningLookups
from cef_api.validation.types import OriginatingCommissioner, Registration, TariffEntry, TracePatient
from cef_common.audit import build_event, record_event
from cef_common.auth import Principal
from cef_common.errors import Conflict, NotFound, Unprocessable

log = structlog.get_logger(__name__)

SOURCE = "cef-api"
# Read per batch of lines (or whole, when small enough): the trace and the registrations.
PATIENT_DATASETS = ("patients", "registrations")
# Every dataset holding NHS-number tokens: all are joined with the lines' tokens, so all are made
# under one key version.
TOKENISED_DATASETS = (*PATIENT_DATASETS, "originating-commissioners", "prior-approvals")
MAX_TOKEN_ERRORS = 20


@dataclass(frozen=True, slots=True)
class LoadResult:
    dataset: str
    rows: int
    version: int
    key_version: int | None
    dob_key_version: int | None = None
    added: int = 0  # rows read from the file's new records
    kept: int = 0  # rows of the version before, standing as they were
    retired: int = 0  # rows of the version before, no longer in force


def _require_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise NotFound(
            # Not quoted: the name is the caller's text (a path segment).
            f"there is no reference dataset of that name; use one of: {', '.join(DATASETS)}",
            code="unknown-dataset",
        )


def _patient_key_version(versions: dict[str, ReferenceVersion], dataset: str) -> int | None:
    """The datasets of NHS-number tokens are joined on them, so all must be made under one key: the
    key of the others in force (patients first, then registrations, ...), or None for the current."""
    for other in TOKENISED_DATASETS:
        current = versions.get(other)
        if other != dataset and current is not None and current.key_version is not None:
            return current.key_version
    return None


def _token_errors(dataset: str, what: str, rows_index: list[int]) -> Unprocessable:
    errors = [
        {"line": i + 2, "column": what, "message": f"the tokeniser refused this {what}"} for i in rows_index
    ]
    return Unprocessable(
        f"{dataset}: {len(rows_index)} value(s) of {what} are not valid; "
        "correct the lines listed and load again",
        code="reference-file-invalid",
        extra={"dataset": dataset, "errors": errors[:MAX_TOKEN_ERRORS]},
    )


# Rows parsed, tokenised and stored per step: a tokeniser call of this many values (the tokeniser is
# built for batches of 100,000 and more) runs while the next chunk is parsed.
CHUNK_ROWS = 100_000
# Datasets of millions of rows: their repeats are found once the file is read, from its rows sorted
# by token, not with a map of every key kept while it is (see `_check_repeats`).
LARGE_DATASETS = frozenset({"patients", "registrations"})


class _Tokens:
    """One column's tokens for a load: one call per chunk of distinct values, every call after the
    first pinned to the first answer's key version so that all the load's tokens compare."""

    def __init__(self, tokeniser: TokeniserClient, kind: Kind, key_version: int | None) -> None:
        self.tokeniser = tokeniser
        self.kind: Kind = kind
        self.key_version = key_version

    def of(self, values: Iterable[Any]) -> dict[Any, str | None]:
        """value → token (None: refused) for the distinct values (dates are sent as ISO dates)."""
        distinct = [v for v in dict.fromkeys(values) if v is not None]
        if not distinct:
            return {}
        sent = [v.isoformat() for v in distinct] if isinstance(distinct[0], date) else distinct
        batch = self.tokeniser.tokenise(self.kind, sent, key_version=self.key_version)
        self.key_version = batch.key_version
        return dict(zip(distinct, batch.tokens, strict=True))


def _refused(
    dataset: str,
    column: str,
    chunk: list[tuple[Any, ...]],
    at: int,
    tokens: dict[Any, str | None],
    first: int,
) -> None:
    """Raises when the tokeniser refused any value of column `at` the parser accepted; `first` is the
    chunk's first row's index in the file."""
    bad = [first + i for i, row in enumerate(chunk) if row[at] is not None and tokens[row[at]] is None]
    if bad:
        raise _token_errors(dataset, column, bad)


def _storage_columns(dataset: str) -> tuple[list[str], int | None]:
    """The table's columns a dataset's rows fill, in the order of the row type's fields (the NHS
    number as its token, the date of birth as its token, a patient's postcode not at all), and the
    position of the NHS number among the fields (None: none)."""
    names = [f.name for f in fields(ROW_TYPES[dataset])]
    if dataset == "patients":
        return ["nhs_token", "dob_token", "outward_code"], 0
    if "nhs_number" not in names:
        return names, None
    at = names.index("nhs_number")
    names[at] = "nhs_token"
    return names, at


def _stored_chunk(
    dataset: str,
    chunk: list[tuple[Any, ...]],
    at: int | None,
    nhs: dict[Any, str | None],
    dob: dict[Any, str | None],
    made: list[bytes] | None = None,
) -> list[tuple[Any, ...]]:
    """A chunk of parsed rows as table rows: NHS numbers and dates of birth leave as tokens, postcodes
    as districts, amounts as their exact decimal text; with `made`, each row ends with its record's
    fingerprint (built once: a million rows are held until they are written)."""
    if made is not None:
        if dataset == "patients":
            return [
                (nhs[n], dob[d] if d is not None else None, district, fingerprint)
                for (n, d, district, _), fingerprint in zip(chunk, made, strict=True)
            ]
        assert at is not None
        return [
            (*row[:at], nhs[row[at]], *row[at + 1 :], fingerprint)
            for row, fingerprint in zip(chunk, made, strict=True)
        ]
    if dataset == "patients":
        return [(nhs[n], dob[d] if d is not None else None, district) for n, d, district, _ in chunk]
    if at is not None:
        return [(*row[:at], nhs[row[at]], *row[at + 1 :]) for row in chunk]
    return [tuple(str(v) if isinstance(v, Decimal) else v for v in row) for row in chunk]


def _rows_for_storage(
    dataset: str,
    data: bytes,
    tokeniser: TokeniserClient,
    key_version: int | None,
    progress: Callable[[int], None] | None = None,
    *,
    fingerprints: Fingerprints | None = None,
    dob_key_version: int | None = None,
    kept: int = 0,
) -> tuple[list[str], list[tuple[Any, ...]], int | None, int | None]:
    """The table's columns and rows of a file, the whole file checked first (ReferenceFileError).

    Parsed a chunk at a time; each chunk's distinct NHS numbers and dates of birth are tokenised in
    a second thread while the next chunk is parsed (the tokeniser works in its own process). With
    `fingerprints` (a large dataset's file of one record a line), each row made ends with its
    record's fingerprint (the `fingerprint` column). `kept`: rows a reload keeps, for `progress`."""
    columns, at = _storage_columns(dataset)
    large = dataset in LARGE_DATASETS
    chunks = parse_chunks(dataset, data, CHUNK_ROWS, check_repeats=not large, watch=fingerprints)
    if fingerprints is not None:
        columns = [*columns, "fingerprint"]
    if at is None:
        return (
            columns,
            [r for chunk in chunks for r in _stored_chunk(dataset, chunk, None, {}, {})],
            None,
            None,
        )
    nhs = _Tokens(tokeniser, "nhs_number", key_version)
    dob = _Tokens(tokeniser, "date_of_birth", dob_key_version)
    patients = dataset == "patients"

    def tokens(chunk: list[tuple[Any, ...]]) -> tuple[dict[Any, str | None], dict[Any, str | None]]:
        return nhs.of(row[at] for row in chunk), dob.of(row[1] for row in chunk) if patients else {}

    rows: list[tuple[Any, ...]] = []

    def store(chunk: list[tuple[Any, ...]], first: int, found: tuple[dict[Any, Any], dict[Any, Any]]) -> None:
        _refused(dataset, "nhs_number", chunk, at, found[0], first)
        if patients:
            _refused(dataset, "date_of_birth", chunk, 1, found[1], first)
        made = None
        if fingerprints is not None:
            # The chunks come in the order they were parsed: theirs are the first fingerprints.
            made = fingerprints.fingerprints[: len(chunk)]
            del fingerprints.fingerprints[: len(chunk)]
        rows.extend(_stored_chunk(dataset, chunk, at, *found, made))
        if progress is not None:
            progress(kept + len(rows))

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference-tokenise") as pool:
            pending: tuple[list[tuple[Any, ...]], int, Future[Any]] | None = None
            read = 0
            for chunk in chunks:
                if not read:
                    # The first calls fix the key versions the later ones are pinned to.
                    store(chunk, read, tokens(chunk))
                else:
                    if pending is not None:
                        store(pending[0], pending[1], pending[2].result())
                    pending = (chunk, read, pool.submit(tokens, chunk))
                read += len(chunk)
            if pending is not None:
                store(pending[0], pending[1], pending[2].result())
    except ReferenceFileError:
        if large:
            # Refused without its repeats among the problems (or with records left out): parsed
            # again whole with them, to be refused with the same first problems as a whole file.
            rows.clear()
            for _ in parse_chunks(dataset, data, CHUNK_ROWS):
                pass
        raise
    if large:
        _check_repeats(dataset, data, rows)
    return columns, rows, nhs.key_version if rows else None, dob.key_version if patients and rows else None


def _repeats_a_kept_row(
    session: Session, dataset: str, rows: list[tuple[Any, ...]], retiring: set[int]
) -> bool:
    """Whether a row a reload adds has the key of a row it keeps (a record repeated in the file, or
    two records of one key of which the version in force holds one). The keys start with the NHS
    number's token, so the rows in force are read by token (indexed), a chunk at a time."""
    width = 1 if dataset == "patients" else 3
    table = repository.table_of(dataset)
    key_columns = [table.c[name] for name in _storage_columns(dataset)[0][:width]]
    added = {row[:width] for row in rows}
    tokens = sorted({row[0] for row in rows})
    for start in range(0, len(tokens), repository.IN_CHUNK):
        stmt = sa.select(table.c.id, *key_columns).where(
            table.c.retired_in.is_(None), table.c.nhs_token.in_(tokens[start : start + repository.IN_CHUNK])
        )
        for found in session.execute(stmt):
            if found[0] not in retiring and tuple(found[1:]) in added:
                return True
    return False


def _check_repeats(dataset: str, data: bytes, rows: list[tuple[Any, ...]]) -> None:
    """Sorts a large file's rows by token (so that they are written in the order of the token index)
    and refuses the file if two rows have the same key, which then sit side by side: a row's NHS-number
    token stands for its NHS number (one number, one token), so no map of every key is needed while
    the file is read. A repeat found, the file is parsed again with every key kept, which refuses it
    with the repeats' lines as a file parsed whole is refused."""
    width = 1 if dataset == "patients" else 3  # the key: the NHS number (and practice and start)
    rows.sort(key=itemgetter(0))
    if _has_repeat(rows, width):
        for _ in parse_chunks(dataset, data, CHUNK_ROWS):
            pass


def _has_repeat(rows: list[tuple[Any, ...]], width: int) -> bool:
    """Whether two rows sorted by their first value have the same first `width` values."""
    run = 0  # where the run of rows with the current first value began
    for i in range(1, len(rows)):
        row = rows[i]
        if row[0] != rows[i - 1][0]:
            run = i
            continue
        key = row[:width]
        if any(rows[k][:width] == key for k in range(run, i)):
            return True
    return False


def versions_in_use(session: Session) -> dict[str, set[int]]:
    """Versions recorded by invoices still being validated (their rows must stay readable)."""
    columns = Invoice.__table__.c  # type: ignore[attr-defined]
    stmt = sa.select(columns.reference_versions).where(columns.status.in_(InvoiceStatus.OPEN))
    used: dict[str, set[int]] = defaultdict(set)
    for (raw,) in session.execute(stmt):
        for dataset, version in json.loads(raw or "{}").items():
            used[dataset].add(int(version))
    return used


def prune_superseded(session: Session, limit: int | None = None) -> int:
    """Deletes superseded versions that no open invoice still reads (with `limit`, at most that many
    rows of each dataset: see `prune_in_batches`)."""
    current = repository.current_versions(session)
    used = versions_in_use(session)
    deleted = 0
    for dataset, version in current.items():
        deleted += repository.delete_versions(
            session, dataset, {version.version, *used.get(dataset, set())}, limit
        )
    return deleted


# Superseded rows deleted per transaction after a load: a million-row version deleted at once would
# hold SQLite's one write lock for longer than another writer waits (busy_timeout, 30 s).
PRUNE_BATCH_ROWS = 100_000


def prune_in_batches(engine: Engine) -> int:
    """Deletes superseded versions no open invoice reads, a batch of rows per transaction; the rows
    deleted. Run after a load commits: the new version is in force from that commit, and these rows
    are then read by nobody but the invoices that pinned them (which keep them)."""
    deleted = 0
    while True:
        with Session(engine) as session:
            batch = prune_superseded(session, PRUNE_BATCH_ROWS)
            session.commit()
        deleted += batch
        if batch == 0:
            return deleted


def load_dataset(
    session: Session,
    *,
    dataset: str,
    data: bytes,
    tokeniser: TokeniserClient,
    principal: Principal | None,
    actor: str,
    progress: Callable[[int], None] | None = None,
    fingerprint_key: bytes | None = None,
) -> LoadResult:
    """Checks every row, tokenises, and replaces the dataset as a new version in the caller's transaction.

    With `fingerprint_key`, a large dataset's reload keeps the rows of the records the version in
    force holds (recognised by their fingerprints, `reference.fingerprints`), and parses, tokenises
    and writes only the records that are new; the rows of records that left the file are retired.

    A bad file raises before anything is written; the caller's transaction makes the swap atomic.
    The superseded version is left for `prune_in_batches`, once the caller has committed.
    The file is parsed and tokenised a chunk at a time (`progress` hears the rows made so far), and
    written in bulk once all of it is known good, so that the write lock is held only to write."""
    _require_dataset(dataset)
    versions = repository.current_versions(session)
    key_version = _patient_key_version(versions, dataset) if dataset in TOKENISED_DATASETS else None
    dob_key_version: int | None = None
    current = versions.get(dataset)
    digest = file_digest(fingerprint_key, dataset, data) if fingerprint_key is not None else None
    if digest is not None and current is not None and current.file_digest == digest:
        return _unchanged(session, current, principal)
    # Read now: the version records are expired with the snapshot below.
    based_on = current.version if current is not None else None
    fingerprints: Fingerprints | None = None
    recognised: Recognised | None = None
    if fingerprint_key is not None and dataset in LARGE_DATASETS and one_record_a_line(data):
        fingerprints = Fingerprints(fingerprint_key, dataset)
        # The rows a reload keeps have the tokens of the version in force: what it adds must be made
        # under the same keys, which must be those every other patient dataset is joined on.
        if current is not None and key_version in (None, current.key_version):
            known = repository.fingerprints_in_force(session, dataset)
            if known:
                recognised = fingerprints.recognise(data, known)
                key_version, dob_key_version = current.key_version, current.dob_key_version
            del known
    # The snapshot read above must not be the one the write starts from (SQLite would refuse to
    # upgrade it once another writer has committed meanwhile): the write begins afresh below.
    session.rollback()
    kept = recognised.kept if recognised is not None else 0
    try:
        columns, rows, made_under, dob_made_under = _rows_for_storage(
            dataset,
            recognised.rest if recognised is not None else data,
            tokeniser,
            key_version,
            progress,
            fingerprints=fingerprints,
            dob_key_version=dob_key_version,
            kept=kept,
        )
        if (
            recognised is not None
            and rows
            and _repeats_a_kept_row(session, dataset, rows, recognised.retiring)
        ):
            raise _ReadWhole
        session.rollback()
    except (_ReadWhole, Unprocessable) as exc:
        if recognised is None or (isinstance(exc, Unprocessable) and exc.code != "reference-file-invalid"):
            raise
        # A problem in a reload that left records out: the whole file is read to be refused with
        # the problems, and the lines, a whole read finds.
        rows = []
        _rows_for_storage(dataset, data, tokeniser, key_version, dob_key_version=dob_key_version)
        raise RuntimeError(f"{dataset}: a reload found a problem the whole file does not have") from exc
    keeping = recognised is not None
    if keeping:
        # The rows kept keep their tokens' key versions (a reload adding nothing makes no tokens).
        made_under, dob_made_under = key_version, dob_key_version
    transaction_lock(session, f"reference:{dataset}")
    version = repository.next_version(session, dataset)
    if keeping and based_on is not None and version != based_on + 1:
        # The rows this reload keeps were read from a version another load has since replaced.
        raise _conflict(dataset)
    try:
        session.add(
            ReferenceVersion(
                dataset=dataset,
                version=version,
                rows=kept + len(rows),
                key_version=made_under,
                dob_key_version=dob_made_under,
                loaded_at=datetime.now(UTC),
                loaded_by=actor[:200],
                file_digest=digest,
            )
        )
        session.flush()
    except IntegrityError:
        raise _conflict(dataset) from None
    if keeping:
        # The rows whose records left the file, and those no fingerprint could recognise (stored
        # before fingerprints were): their records, if still in the file, are among those added.
        assert recognised is not None
        retired = repository.retire_rows(session, dataset, version, recognised.retiring)
        retired += repository.retire_in_force(session, dataset, version, unfingerprinted_only=True)
    else:
        retired = repository.retire_in_force(session, dataset, version)
    repository.insert_rows(session, dataset, version, columns, rows)
    result = LoadResult(
        dataset=dataset,
        rows=kept + len(rows),
        version=version,
        key_version=made_under,
        dob_key_version=dob_made_under,
        added=len(rows),
        kept=kept,
        retired=retired,
    )
    del rows  # the largest thing held: not kept through the commit
    _record_load(session, result, principal)
    return result


def _unchanged(session: Session, current: ReferenceVersion, principal: Principal | None) -> LoadResult:
    """The file the version in force was read from, sent again: nothing changes (audited as such)."""
    result = LoadResult(
        dataset=current.dataset,
        rows=current.rows,
        version=current.version,
        key_version=current.key_version,
        dob_key_version=current.dob_key_version,
        kept=current.rows,
    )
    _record_load(session, result, principal, unchanged=True)
    return result


def _record_load(
    session: Session, result: LoadResult, principal: Principal | None, *, unchanged: bool = False
) -> None:
    """The load's audit event, in the caller's transaction (counts only), and its log line."""
    detail: dict[str, Any] = {
        "version": result.version,
        "key_version": result.key_version,
        "dob_key_version": result.dob_key_version,
        "added": result.added,
        "kept": result.kept,
        "retired": result.retired,
    }
    if unchanged:
        detail["unchanged"] = True
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="update",
            type="reference.load",
            outcome="success",
            principal=principal,
            entity_type="reference-dataset",
            entity_id=result.dataset,
            count=result.rows,
            detail=detail,
        ),
    )
    log.info(
        "reference_unchanged" if unchanged else "reference_loaded",
        dataset=result.dataset,
        rows=result.rows,
        added=result.added,
        kept=result.kept,
        retired=result.retired,
        version=result.version,
    )


class _ReadWhole(Exception):
    """A reload's file has a problem among records it left out: it is read whole to be refused."""


def _conflict(dataset: str) -> Conflict:
    return Conflict(
        f"another load of {dataset} finished first; send this one again to replace it",
        code="reference-load-conflict",
    )


def record_refused_load(session: Session, *, dataset: str, principal: Principal | None, code: str) -> None:
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="update",
            type="reference.load",
            outcome="failure",
            principal=principal,
            entity_type="reference-dataset",
            entity_id=dataset,
            detail={"code": code},
        ),
    )


# --- reading back for validation ------------------------------------------------------------------


@dataclass
class ReferenceSnapshot:
    """The small datasets of one set of versions, in memory for a whole validation job."""

    versions: dict[str, int]
    key_version: int | None  # of NHS-number tokens
    dob_key_version: int | None
    tariffs: dict[tuple[str, str], TariffEntry] = field(default_factory=dict)
    mffs: dict[str, Decimal] = field(default_factory=dict)
    practices: dict[str, str] = field(default_factory=dict)
    districts: dict[str, str] = field(default_factory=dict)
    specialised: dict[str, str] = field(default_factory=dict)
    # The v2 datasets, whole (small): originating commissioners, devolved districts, contracts,
    # prior approvals.
    commissioning: CommissioningLookups = field(default_factory=CommissioningLookups)
    # The whole trace and registrations, when small enough to hold (see `memory_rows`).
    everyone: BatchReference | None = None

    @classmethod
    def load(
        cls, session: Session, versions: dict[str, ReferenceVersion], *, memory_rows: int = 0
    ) -> ReferenceSnapshot:
        patient_versions = [versions[d].key_version for d in TOKENISED_DATASETS if d in versions]
        patients = versions.get("patients")
        snap = cls(
            versions={d: v.version for d, v in versions.items()},
            key_version=next((k for k in patient_versions if k is not None), None),
            dob_key_version=patients.dob_key_version if patients is not None else None,
        )
        if v := versions.get("tariff"):
            for r in repository.all_rows(
                session,
                "tariff",
                v.version,
                ["hrg_code", "point_of_delivery", "price", "trim_point_days", "excess_bed_day_price"],
            ):
                entry = TariffEntry(
                    hrg_code=r.hrg_code.upper(),
                    point_of_delivery=r.point_of_delivery.upper(),
                    price=Decimal(r.price),
                    trim_point_days=int(r.trim_point_days),
                    excess_bed_day_price=Decimal(r.excess_bed_day_price),
                )
                snap.tariffs[(entry.hrg_code, entry.point_of_delivery)] = entry
        if v := versions.get("providers"):
            for r in repository.all_rows(
                session, "providers", v.version, ["provider_code", "market_forces_factor"]
            ):
                snap.mffs[r.provider_code.upper()] = Decimal(r.market_forces_factor)
        if v := versions.get("gp-practices"):
            for r in repository.all_rows(
                session, "gp-practices", v.version, ["gp_practice_code", "commissioner_code"]
            ):
                if r.commissioner_code:
                    snap.practices[r.gp_practice_code.upper()] = r.commissioner_code
        if v := versions.get("postcode-districts"):
            for r in repository.all_rows(
                session, "postcode-districts", v.version, ["postcode_district", "commissioner_code"]
            ):
                snap.districts[r.postcode_district.upper()] = r.commissioner_code
        if v := versions.get("specialised-services"):
            for r in repository.all_rows(
                session, "specialised-services", v.version, ["service_code", "commissioner_code"]
            ):
                snap.specialised[r.service_code.upper()] = r.commissioner_code
        snap._load_commissioning(session, versions)
        patient_rows = sum(versions[d].rows for d in PATIENT_DATASETS if d in versions)
        if patient_rows <= memory_rows:
            snap.everyone = snap._patients(session, None)
        return snap

    def _load_commissioning(self, session: Session, versions: dict[str, ReferenceVersion]) -> None:
        """The v2 datasets, each read whole once (they are small beside the trace)."""
        lookups = self.commissioning
        if v := versions.get("originating-commissioners"):
            columns = ["nhs_token", "care_basis", "commissioner_code", "valid_from", "valid_to"]
            for r in repository.all_rows(session, "originating-commissioners", v.version, columns):
                lookups.add_originating(
                    nhs_token=r.nhs_token,
                    care_basis=r.care_basis,
                    commissioner_code=r.commissioner_code,
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                )
        if v := versions.get("devolved-districts"):
            for r in repository.all_rows(
                session, "devolved-districts", v.version, ["postcode_district", "nation"]
            ):
                lookups.add_devolved(postcode_district=r.postcode_district, nation=r.nation)
        if v := versions.get("contracts"):
            # Loaded, even with no rows: activity no row covers is non-contract (check 16).
            lookups.mark_contracts_loaded()
            columns = ["commissioner_code", "provider_code", "valid_from", "valid_to"]
            for r in repository.all_rows(session, "contracts", v.version, columns):
                lookups.add_contract(
                    commissioner_code=r.commissioner_code,
                    provider_code=r.provider_code,
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                )
        if v := versions.get("prior-approvals"):
            columns = ["commissioner_code", "reference", "nhs_token", "valid_from", "valid_to"]
            for r in repository.all_rows(session, "prior-approvals", v.version, columns):
                lookups.add_prior_approval(
                    commissioner_code=r.commissioner_code,
                    reference=r.reference,
                    nhs_token=r.nhs_token,
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                )

    def for_patients(self, session: Session, nhs_tokens: list[str]) -> BatchReference:
        """The snapshot plus the trace and registrations of one batch's patients."""
        if self.everyone is not None:
            return self.everyone
        return self._patients(session, nhs_tokens)

    def _patients(self, session: Session, nhs_tokens: list[str] | None) -> BatchReference:
        patients: dict[str, TracePatient] = {}
        registrations: dict[str, list[Registration]] = defaultdict(list)
        # Districts, practice codes and dates repeat across the trace: one object each, not one per
        # row (a trace of a million patients is held whole when it fits in memory_rows).
        shared: dict[Any, Any] = {}
        one = shared.setdefault
        if (v := self.versions.get("patients")) is not None:
            columns = ["nhs_token", "dob_token", "outward_code"]
            found = (
                repository.rows_for_tokens(session, "patients", v, nhs_tokens, columns)
                if nhs_tokens is not None
                else repository.all_rows(session, "patients", v, columns)
            )
            for r in found:
                patients[r.nhs_token] = TracePatient(
                    dob_token=r.dob_token, outward_code=one(r.outward_code, r.outward_code)
                )
        if (v := self.versions.get("registrations")) is not None:
            columns = ["nhs_token", "gp_practice_code", "registered_from", "registered_to"]
            rows = (
                repository.rows_for_tokens(session, "registrations", v, nhs_tokens, columns)
                if nhs_tokens is not None
                else repository.all_rows(session, "registrations", v, columns)
            )
            for r in rows:
                code = r.gp_practice_code.upper()
                registrations[r.nhs_token].append(
                    Registration(
                        gp_practice_code=one(code, code),
                        registered_from=one(r.registered_from, r.registered_from),
                        registered_to=one(r.registered_to, r.registered_to),
                    )
                )
        return BatchReference(self, patients, dict(registrations))


@dataclass
class BatchReference:
    """`ReferenceData` for one batch of lines."""

    snapshot: ReferenceSnapshot
    patients: dict[str, TracePatient]
    regs: dict[str, list[Registration]]

    def tariff(self, hrg_code: str, point_of_delivery: str) -> TariffEntry | None:
        return self.snapshot.tariffs.get((hrg_code, point_of_delivery))

    def market_forces_factor(self, provider_code: str) -> Decimal | None:
        return self.snapshot.mffs.get(provider_code)

    def patient(self, nhs_token: str) -> TracePatient | None:
        return self.patients.get(nhs_token)

    def registrations(self, nhs_token: str) -> list[Registration]:
        return self.regs.get(nhs_token, [])

    def practice_commissioner(self, gp_practice_code: str) -> str | None:
        return self.snapshot.practices.get(gp_practice_code)

    def district_commissioner(self, outward_code: str) -> str | None:
        return self.snapshot.districts.get(outward_code)

    def specialised_commissioner(self, service_code: str) -> str | None:
        return self.snapshot.specialised.get(service_code)

    def originating_commissioners(self, nhs_token: str, care_basis: str) -> list[OriginatingCommissioner]:
        return self.snapshot.commissioning.originating_commissioners(nhs_token, care_basis)

    def devolved_nation(self, outward_code: str) -> str | None:
        return self.snapshot.commissioning.devolved_nation(outward_code)

    def contracts_loaded(self) -> bool:
        return self.snapshot.commissioning.contracts_loaded()

    def contract_covers(self, commissioner_code: str, provider_code: str, on: date) -> bool:
        return self.snapshot.commissioning.contract_covers(commissioner_code, provider_code, on)

    def prior_approval(self, commissioner_code: str, reference_upper: str, nhs_token: str, on: date) -> bool:
        return self.snapshot.commissioning.prior_approval(commissioner_code, reference_upper, nhs_token, on)
