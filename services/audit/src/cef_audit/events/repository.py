"""Every query over the audit log's events lives here."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from cef_audit.log.records import item_of, utc_stamp
from cef_audit.log.tables import audit_events, audit_head
from cef_common.errors import BadRequest

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
    outcome: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def described(self) -> dict[str, Any]:
        """The filters that were set, for the auditor-query event (JSON-ready)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value in (None, ()):
                continue
            out[key] = (
                utc_stamp(value)
                if isinstance(value, datetime)
                else list(value)
                if isinstance(value, tuple)
                else value
            )
        return out


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
    if not isinstance(seq, int) or cursor_order != order:
        raise BadRequest(
            "cursor belongs to a listing in another order: keep the same order parameter",
            code="invalid-cursor",
        )
    return seq


def _type_clause(patterns: tuple[str, ...]) -> sa.ColumnElement[bool]:
    clauses: list[sa.ColumnElement[bool]] = []
    for pattern in patterns:
        if pattern.endswith("*"):
            prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(audit_events.c.type.like(prefix + "%", escape="\\"))
        else:
            clauses.append(audit_events.c.type == pattern)
    return sa.or_(*clauses)


def _seq_bounds(conn: Connection, f: EventFilter) -> tuple[int | None, int | None]:
    """The time range as a seq range: the sequencer never lets recorded_at go backwards."""
    low = high = None
    c = audit_events.c
    # ORDER BY recorded_at, seq … LIMIT 1 walks the (recorded_at, seq) index from one end; a
    # min()/max() over seq would scan the log from the other.
    if f.since is not None:
        low = conn.execute(
            sa.select(c.seq)
            .where(c.recorded_at >= utc_stamp(f.since))
            .order_by(c.recorded_at, c.seq)
            .limit(1)
        ).scalar_one_or_none()
        low = -1 if low is None else int(low)  # nothing that late: an empty range
    if f.until is not None:
        high = conn.execute(
            sa.select(c.seq)
            .where(c.recorded_at < utc_stamp(f.until))
            .order_by(c.recorded_at.desc(), c.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        high = 0 if high is None else int(high)
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
    if f.entity is not None:
        where.append(c.entity_id == f.entity)
    if f.entity_type is not None:
        where.append(c.entity_type == f.entity_type)
    if f.outcome:
        where.append(c.outcome.in_(f.outcome))
    if f.source:
        where.append(c.source.in_(f.source))
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
