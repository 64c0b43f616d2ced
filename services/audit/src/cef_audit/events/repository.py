"""Every query over the audit log's events lives here."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import JSONB

from cef_audit.log.records import item_of, utc_stamp
from cef_audit.log.tables import COMMON_OUTCOME, audit_events, audit_head
from cef_common.errors import BadRequest
from cef_common.params import MAX_BIGINT
from cef_common.redact import carries_identifier, digest

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class EventFilter:
    """What an auditor asks for; every field narrows the result (lists: any of)."""

    actor: str | None = None
    org: str | None = None
    action: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    entity: str | None = None
    entity_type: str | None = None
    # With `entity`: also every event whose entity id starts with "{entity}/", whatever its entity
    # type: the entity's parts (an invoice's lines "{invoice}/{line_ref}", its challenges
    # "{invoice}/challenge/{id}" and payments "{invoice}/payment/{n}").
    parts: bool = False
    outcome: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    # The event's `detail.patient_token`: not a column but read from the record itself, so only ever
    # asked together with a type (the type index narrows the rows whose record is parsed).
    patient_token: str | None = None

    def __post_init__(self) -> None:
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is None:
                continue
            if moment.tzinfo is None:
                raise BadRequest(
                    f"{name} needs a time zone, e.g. 2026-11-23T09:00:00Z", code="naive-datetime"
                )
            try:
                moment.astimezone(UTC)
            except OverflowError:
                # 0001-01-01T00:00+01:00 is valid ISO 8601, but its UTC time falls in year 0.
                raise BadRequest(
                    f"{name} falls outside the years 1 to 9999 once converted to UTC", code="bad-datetime"
                ) from None

    def described(self) -> dict[str, Any]:
        """The filters that were set, for the auditor-query event (JSON-ready). Each is a value the
        auditor typed: recorded as it is when nothing in it is shaped like an identifier, else as
        its keyed digest and length (cef_common.redact)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or value == () or value is False:
                continue
            out[key] = (
                utc_stamp(value)
                if isinstance(value, datetime)
                else [_recorded(v) for v in value]
                if isinstance(value, tuple)
                else _recorded(value)
            )
        return out


def _recorded(value: Any) -> Any:
    # Ten digits anywhere (`P9434765919`), not only as a word the log mask would catch.
    return digest(value) if isinstance(value, str) and carries_identifier(value) else value


def encode_cursor(seq: int, order: Order) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"seq": seq, "order": order})).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        seq, cursor_order = data["seq"], data["order"]
    except (ValueError, TypeError, KeyError):
        raise BadRequest(
            "cursor is not one this service issued: pass next_cursor unchanged", code="invalid-cursor"
        ) from None
    # Only a seq the log can hold (orjson reads up to 2**64 - 1; BIGINT stops at 2**63 - 1).
    if type(seq) is not int or not 0 <= seq <= MAX_BIGINT:
        raise BadRequest(
            "cursor is not one this service issued: pass next_cursor unchanged", code="invalid-cursor"
        )
    if cursor_order != order:
        raise BadRequest(
            "cursor belongs to a listing in another order: keep the same order parameter",
            code="invalid-cursor",
        )
    return seq


def _like_prefix(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """`column LIKE 'prefix%'` with the wildcards (and the escape character) of `prefix` escaped."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


def _type_clause(patterns: tuple[str, ...]) -> sa.ColumnElement[bool]:
    clauses: list[sa.ColumnElement[bool]] = []
    for pattern in patterns:
        if pattern.endswith("*"):
            clauses.append(_like_prefix(audit_events.c.type, pattern[:-1]))
        else:
            clauses.append(audit_events.c.type == pattern)
    return sa.or_(*clauses)


def _detail_equals(conn: Connection, key: str, value: str) -> sa.ColumnElement[bool]:
    """`detail.<key>` of the hashed record equals `value`, in the database's own JSON functions (as
    verification reads the records); `key` is a name of this module, never a caller's."""
    canonical = audit_events.c.canonical
    if conn.dialect.name == "postgresql":
        record = sa.cast(sa.func.convert_from(canonical, "UTF8"), JSONB)
        found: sa.ColumnElement[str] = record[("detail", key)].astext
        return found == value
    extracted: sa.ColumnElement[str] = sa.func.json_extract(sa.cast(canonical, sa.Text), f"$.detail.{key}")
    return extracted == value


def _id_starts_with(conn: Connection, prefix: str) -> sa.ColumnElement[bool]:
    """The entity id starts with `prefix`, case-sensitively and whatever characters `prefix` holds.

    SQLite: a half-open range [prefix, prefix with its last character incremented), which its
    entity id index answers; SQLite compares text byte by byte (BINARY) and UTF-8 sorts as code
    points do, so the range holds exactly the ids with that prefix. Its LIKE would not do: it ignores
    the case of ASCII letters. PostgreSQL: LIKE with `%`, `_` and the escape character escaped,
    which is exact under any (deterministic) collation; the same range would not be, since a
    linguistic collation (en_US, ICU) orders `x/`, `X#` or `X\\` between `X/` and `X0`."""
    ids = audit_events.c.entity_id
    if conn.dialect.name == "sqlite":
        return sa.and_(ids >= prefix, ids < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return _like_prefix(ids, prefix)


_LAST = "SELECT seq, recorded_at FROM audit_events ORDER BY seq DESC LIMIT 1"
_STAMP_FROM = "SELECT seq, recorded_at FROM audit_events WHERE seq >= {marker} ORDER BY seq LIMIT 1"


def first_seq_at_or_after(conn: Connection, stamp: str) -> int | None:
    """The first seq recorded at or after `stamp` (None when there is none), by binary search over
    the primary key: the sequencer never lets recorded_at go backwards along seq, so "recorded at or
    after" is false up to some seq and true from there on. About 20 point look-ups for a million
    events, and no index on recorded_at to keep up on every append. A missing seq (which verify
    reports) is stepped over: each probe reads the first event at or after its position."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    probe = _STAMP_FROM.format(marker=marker)
    last = conn.exec_driver_sql(_LAST).first()
    if last is None or last.recorded_at < stamp:
        return None
    # Invariant: every event before `lo` was recorded before `stamp`; the first event at or after
    # `hi` is `found`, recorded at or after it.
    lo, hi, found = 1, int(last.seq), int(last.seq)
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.exec_driver_sql(probe, (mid,)).one()  # exists: `found` >= mid does
        if row.recorded_at >= stamp:
            hi, found = mid, int(row.seq)
        else:
            lo = int(row.seq) + 1
    return found


def _seq_bounds(conn: Connection, f: EventFilter) -> tuple[int | None, int | None]:
    """The time range as a seq range: the sequencer never lets recorded_at go backwards."""
    low = high = None
    if f.since is not None:
        low = first_seq_at_or_after(conn, utc_stamp(f.since))
        if low is None:
            low = -1  # nothing that late: an empty range
    if f.until is not None:
        # Everything before the first event at or after `until`; with none, the whole log.
        first_late = first_seq_at_or_after(conn, utc_stamp(f.until))
        if first_late is not None:
            high = first_late - 1
        else:
            last = conn.exec_driver_sql(_LAST).first()
            high = 0 if last is None else int(last.seq)
    return low, high


def _where(conn: Connection, f: EventFilter) -> list[sa.ColumnElement[bool]]:
    c = audit_events.c
    where: list[sa.ColumnElement[bool]] = []
    if f.actor is not None:
        where.append(c.actor_sub == f.actor)
    if f.org is not None:
        where.append(c.actor_org == f.org)
    if f.action:
        where.append(c.action.in_(f.action))
    if f.type:
        where.append(_type_clause(f.type))
    if f.entity is not None and f.parts:
        itself = c.entity_id == f.entity
        if f.entity_type is not None:
            itself = sa.and_(itself, c.entity_type == f.entity_type)
        where.append(sa.or_(itself, _id_starts_with(conn, f.entity + "/")))
    else:
        if f.entity is not None:
            where.append(c.entity_id == f.entity)
        if f.entity_type is not None:
            where.append(c.entity_type == f.entity_type)
    if f.outcome:
        where.append(c.outcome.in_(f.outcome))
        if COMMON_OUTCOME not in f.outcome:
            # Restates the outcome index's own condition, as written in it: the planners (SQLite's
            # by matching the term, PostgreSQL's even in a generic plan) then know the partial
            # index holds every row the query can match.
            where.append(c.outcome != sa.literal_column(f"'{COMMON_OUTCOME}'"))
    if f.source:
        where.append(c.source.in_(f.source))
    if f.patient_token is not None:
        where.append(_detail_equals(conn, "patient_token", f.patient_token))
    low, high = _seq_bounds(conn, f)
    if low is not None:
        where.append(c.seq >= low if low > 0 else sa.false())
    if high is not None:
        where.append(c.seq <= high)
    return where


def list_events(
    engine: Engine,
    f: EventFilter,
    *,
    limit: int,
    after: int | None,
    order: Order = "asc",
    upto: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of events in seq order and the seq to continue after (None on the last page)."""
    c = audit_events.c
    with engine.connect() as conn:
        where = _where(conn, f)
        if after is not None:
            where.append(c.seq > after if order == "asc" else c.seq < after)
        if upto is not None:
            where.append(c.seq <= upto)
        stmt = (
            sa.select(c.seq, c.canonical, c.hash)
            .where(*where)
            .order_by(c.seq.asc() if order == "asc" else c.seq.desc())
            .limit(limit + 1)
        )
        rows = conn.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [item_of(bytes(r.canonical), r.hash) for r in rows]
    return items, (int(rows[-1].seq) if more and rows else None)


def iterate_events(
    engine: Engine, f: EventFilter, *, max_events: int, page: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every matching event in seq order, up to the head at the start (an export's stable view)."""
    with engine.connect() as conn:
        upto = int(conn.execute(sa.select(audit_head.c.length)).scalar_one())
    after: int | None = None
    sent = 0
    while sent < max_events:
        items, next_after = list_events(engine, f, limit=min(page, max_events - sent), after=after, upto=upto)
        yield from items
        sent += len(items)
        if next_after is None:
            return
        after = next_after


@dataclass(frozen=True)
class CountRow:
    """How many events of one type had one outcome for one organisation (None: no organisation)."""

    type: str
    outcome: str
    org: str | None
    count: int


def count_events(engine: Engine, f: EventFilter) -> list[CountRow]:
    """Counts of the matching events by (type, outcome, actor organisation), counted by the database
    in one pass over the index columns (GROUP BY), the time bounds as a seq range as listings have
    them: a summary of millions of events never brings one of them into this process."""
    c = audit_events.c
    with engine.connect() as conn:
        stmt = (
            sa.select(c.type, c.outcome, c.actor_org, sa.func.count().label("n"))
            .where(*_where(conn, f))
            .group_by(c.type, c.outcome, c.actor_org)
        )
        rows = conn.execute(stmt).all()
    return [CountRow(type=r.type, outcome=r.outcome, org=r.actor_org, count=int(r.n)) for r in rows]
