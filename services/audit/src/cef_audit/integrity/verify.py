"""Recomputes the whole chain and checks every checkpoint, stored or kept by an auditor.

For each event, in seq order: the seq follows the previous one; SHA-256 of the stored canonical
bytes is the stored hash; the canonical record names this seq and the previous event's hash; and
every queryable column agrees with the canonical record. The canonical bytes are re-hashed, never
re-serialised, which keeps a million events within seconds. Checkpoints must carry a valid
signature and name the hash the chain actually has at their length: rewriting the whole chain
consistently (possible with database access) cannot reproduce a signed head."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Engine

from cef_audit.log.records import INDEX_COLUMN_NAMES, index_columns
from cef_audit.log.sequencer import CHECKPOINT_ORIGIN, checkpoint_from_row
from cef_audit.log.tables import GENESIS_HASH, audit_checkpoints, audit_head
from cef_common.auth import verify_jws

_FETCH = 20_000
_POSTGRES_PARTS = 2
_SPLIT_FROM = 10_000  # events; below this one query is quicker than several


@dataclass(frozen=True)
class ClaimedHead:
    """A checkpoint's claim: at `length` the chain's head hash is `head_hash`."""

    length: int
    head_hash: str
    label: str


@dataclass
class VerifyReport:
    valid: bool
    length: int
    head: str
    first_bad_seq: int | None = None
    reason: str | None = None
    problems: list[str] = field(default_factory=list)
    events_checked: int = 0
    checkpoints_checked: int = 0
    kept_checkpoints_checked: int = 0
    latest_checkpoint: dict[str, Any] | None = None
    duration_ms: float = 0.0


def open_checkpoint(token: str, jwks: dict[str, Any]) -> tuple[int, str, str]:
    """(length, head, time) of a signed checkpoint; ValueError when it does not verify."""
    payload = orjson.loads(verify_jws(token, jwks))
    if not isinstance(payload, dict) or payload.get("origin") != CHECKPOINT_ORIGIN:
        raise ValueError("the signed payload is not a checkpoint of this log")
    length, head, issued = payload.get("length"), payload.get("head"), payload.get("time")
    if not isinstance(length, int) or not isinstance(head, str) or not isinstance(issued, str):
        raise ValueError("the signed checkpoint lacks length, head or time")
    return length, head, issued


def _chain_rows(engine: Engine, upto: int) -> Generator[Sequence[Any], None, None]:
    sql = "SELECT seq, canonical, prev_hash, hash FROM audit_events WHERE seq <= :upto ORDER BY seq"
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # The DBAPI cursor directly: a million rows through Row objects costs a second.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(sql.replace(":upto", "?"), (upto,))
            while rows := cursor.fetchmany(_FETCH):
                yield from rows
            cursor.close()
            return
        # PostgreSQL: a server-side cursor in binary format (bytea as text would be hex-decoded).
        driver = conn.connection.driver_connection
        with driver.cursor(name="audit_verify_chain", binary=True) as named:  # type: ignore[union-attr]
            named.itersize = _FETCH
            named.execute(sql.replace(":upto", "%s"), (upto,))
            while rows := named.fetchmany(_FETCH):
                yield from rows


# Every queryable column against the canonical record it was derived from, in the database's own
# JSON functions (C, on the database's side, concurrently with the hashing in Python).
_JSON_PATHS = {
    "event_id": ("$.event_id", "{event_id}"),
    "recorded_at": ("$.recorded_at", "{recorded_at}"),
    "action": ("$.action", "{action}"),
    "type": ("$.type", "{type}"),
    "outcome": ("$.outcome", "{outcome}"),
    "actor_sub": ("$.actor.sub", "{actor,sub}"),
    "actor_org": ("$.actor.org", "{actor,org}"),
    "actor_client": ("$.actor.client", "{actor,client}"),
    "source": ("$.source", "{source}"),
    "entity_type": ("$.entity.type", "{entity,type}"),
    "entity_id": ("$.entity.id", "{entity,id}"),
    "prev_hash": ("$.prev_hash", "{prev_hash}"),
}
_CHECKED = ", ".join(["seq", *_JSON_PATHS])
_SQLITE_COLUMN_CHECK = (
    f"SELECT min(seq) FROM (SELECT {_CHECKED}, CAST(canonical AS TEXT) AS c FROM audit_events "
    "WHERE seq > :low AND seq <= :upto) "
    "WHERE json_extract(c, '$.seq') IS NOT seq OR "
    + " OR ".join(f"json_extract(c, '{path}') IS NOT {col}" for col, (path, _) in _JSON_PATHS.items())
)
# OFFSET 0 keeps PostgreSQL from inlining the subquery, which would parse each record once per
# column compared instead of once.
_POSTGRES_COLUMN_CHECK = (
    f"SELECT min(seq) FROM (SELECT {_CHECKED}, convert_from(canonical, 'UTF8')::jsonb AS c FROM audit_events "
    "WHERE seq > :low AND seq <= :upto OFFSET 0) AS checked "
    "WHERE (c ->> 'seq')::bigint IS DISTINCT FROM seq OR "
    + " OR ".join(f"(c #>> '{path}') IS DISTINCT FROM {col}" for col, (_, path) in _JSON_PATHS.items())
)


def _differing_columns(canonical: bytes, row: Sequence[Any]) -> list[str]:
    """Which stored columns of one event disagree with its canonical record (row: seq, prev_hash,
    then INDEX_COLUMN_NAMES)."""
    try:
        record = orjson.loads(canonical)
        expected = (record["seq"], record["prev_hash"], *index_columns(record))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ["canonical (not a record)"]
    names = ("seq", "prev_hash", *INDEX_COLUMN_NAMES)
    return [name for name, want, got in zip(names, expected, row, strict=True) if want != got]


def _column_check_in_python(engine: Engine, upto: int) -> int | None:
    """The slow path, for a log whose canonical bytes the database cannot even parse as JSON."""
    sql = (
        f"SELECT canonical, seq, prev_hash, {', '.join(INDEX_COLUMN_NAMES)} FROM audit_events "
        "WHERE seq <= :upto ORDER BY seq"
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(
            sa.text(sql), {"upto": upto}
        )
        for row in result:
            if _differing_columns(bytes(row[0]), tuple(row[1:])):
                return int(row[1])
    return None


def _first_column_mismatch(engine: Engine, upto: int) -> tuple[int, str] | None:
    """The first event whose stored columns differ from its canonical record, and which ones."""
    postgres = engine.dialect.name == "postgresql"
    sql = _POSTGRES_COLUMN_CHECK if postgres else _SQLITE_COLUMN_CHECK
    # PostgreSQL parses JSON in the server, one backend per connection: ranges checked on their own
    # connections at once use its cores. SQLite's JSON work already runs beside the hashing.
    parts = _POSTGRES_PARTS if postgres and upto >= _SPLIT_FROM else 1
    bounds = [(upto * k // parts, upto * (k + 1) // parts) for k in range(parts)]

    def _range(low: int, high: int) -> int | None:
        with engine.connect() as conn:
            found = conn.execute(sa.text(sql), {"low": low, "upto": high}).scalar_one_or_none()
        return None if found is None else int(found)

    try:
        if parts == 1:
            found = [_range(0, upto)]
        else:
            with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="audit-verify") as pool:
                found = list(pool.map(lambda b: _range(*b), bounds))
        bad = min((f for f in found if f is not None), default=None)
    except sa.exc.DBAPIError:
        bad = _column_check_in_python(engine, upto)
    if bad is None:
        return None
    columns = ", ".join(("seq", "prev_hash", *INDEX_COLUMN_NAMES))
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT canonical, {columns} FROM audit_events WHERE seq = :s"), {"s": bad}
        ).one()
    differing = _differing_columns(bytes(row[0]), tuple(row[1:])) or ["canonical"]
    return int(bad), f"event {bad}: stored {', '.join(differing)} differ from the hashed record"


class _Failure(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def verify_log(engine: Engine, jwks: dict[str, Any], kept: Sequence[str] = ()) -> VerifyReport:
    """Verifies the log against its own checkpoints and the auditor's `kept` ones (JWS strings)."""
    started = time.perf_counter()
    problems: list[str] = []
    claims: dict[int, list[ClaimedHead]] = {}
    # Checkpoints first, then the head, then the events up to that head: a checkpoint is only
    # ever signed after the events it covers, so none read here can lie beyond the head read next.
    with engine.connect() as conn:
        stored = [
            checkpoint_from_row(r)
            for r in conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.length))
        ]
        head_row = conn.execute(sa.select(audit_head.c.length, audit_head.c.head_hash)).one()
    head_length, head_hash = int(head_row.length), str(head_row.head_hash)
    latest: dict[str, Any] | None = None
    for cp in stored:
        try:
            length, head, issued = open_checkpoint(cp.jws, jwks)
        except ValueError as exc:
            problems.append(f"stored checkpoint at length {cp.length}: {exc}")
            continue
        if (length, head, issued) != (cp.length, cp.head_hash, cp.issued_at):
            problems.append(
                f"stored checkpoint at length {cp.length}: its columns differ from what was signed"
            )
        claims.setdefault(length, []).append(ClaimedHead(length, head, f"checkpoint at length {length}"))
        latest = cp.as_json()
    for i, token in enumerate(kept):
        try:
            length, head, _ = open_checkpoint(token, jwks)
        except ValueError as exc:
            problems.append(f"kept checkpoint #{i + 1}: {exc}")
            continue
        claims.setdefault(length, []).append(ClaimedHead(length, head, f"kept checkpoint at length {length}"))

    report = VerifyReport(
        valid=False,
        length=head_length,
        head=head_hash,
        latest_checkpoint=latest,
        checkpoints_checked=len(stored),
        kept_checkpoints_checked=len(kept),
    )
    verified_upto = 0  # the longest prefix a checkpoint has vouched for
    expected = 1
    prev = GENESIS_HASH
    sha256 = hashlib.sha256
    columns: list[tuple[int, str] | None] = []
    errors: list[BaseException] = []

    def _columns() -> None:
        try:
            columns.append(_first_column_mismatch(engine, head_length))
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    column_thread = threading.Thread(target=_columns, name="audit-verify-columns")
    column_thread.start()
    rows = _chain_rows(engine, head_length)
    try:
        for seq, canonical, prev_col, digest in rows:
            if seq != expected:
                raise _Failure(expected, f"event {expected} is missing (the next stored event is {seq})")
            if not isinstance(canonical, bytes):
                canonical = bytes(canonical)
            if sha256(canonical).hexdigest() != digest:
                raise _Failure(seq, f"event {seq}: its stored record does not hash to its stored hash")
            if prev_col != prev:
                record = orjson.loads(canonical)
                if record.get("prev_hash") != prev_col:
                    raise _Failure(seq, f"event {seq}: stored prev_hash differs from the hashed record")
                # This event is intact but was chained to a different predecessor: the predecessor
                # (or, at seq 1, the start of the log) is what was rewritten.
                bad = max(seq - 1, 1)
                raise _Failure(bad, f"event {bad} is not the event that event {seq} was chained to")
            if seq in claims:
                for claim in claims[seq]:
                    if claim.head_hash != digest:
                        raise _Failure(
                            verified_upto + 1,
                            f"the {claim.label} signed a different head hash: "
                            f"events {verified_upto + 1}..{seq} were rewritten",
                        )
                verified_upto = seq
            prev = digest
            expected += 1
        if expected - 1 < head_length:
            raise _Failure(expected, f"the log holds {expected - 1} events but its head says {head_length}")
        if prev != head_hash:
            raise _Failure(head_length, f"event {head_length} is not the head the log recorded")
        beyond = [claim for group in claims.values() for claim in group if claim.length > head_length]
        if beyond:
            first = min(beyond, key=lambda c: c.length)
            raise _Failure(
                head_length + 1,
                f"the {first.label} covers {first.length} events, but the log holds "
                f"only {head_length}: events were removed from its end",
            )
    except _Failure as failure:
        report.first_bad_seq = failure.seq
        report.reason = failure.reason
    finally:
        rows.close()  # returns the connection at once, also when stopping early
    column_thread.join()
    if errors:
        raise errors[0]
    mismatch = columns[0] if columns else None
    if mismatch is not None and (report.first_bad_seq is None or mismatch[0] <= report.first_bad_seq):
        report.first_bad_seq, report.reason = mismatch
    if report.reason is not None:
        problems.insert(0, report.reason)
    report.events_checked = expected - 1
    report.problems = problems
    report.valid = not problems
    if not report.valid and report.reason is None:
        report.reason = problems[0]
    report.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return report
