"""Queries without a recorded_at index: time bounds found by binary search over seq give exactly the
bounds an index on (recorded_at, seq) gave, and rare outcomes are still found through an index."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import psycopg.sql
import pytest
import sqlalchemy as sa
from audit_test_support import make_event

from cef_audit.events.repository import EventFilter, _seq_bounds, _where, first_seq_at_or_after, list_events
from cef_audit.log.records import Recorder
from cef_audit.log.sequencer import AuditLog
from cef_audit.log.tables import audit_events
from cef_common.db import make_engine
from cef_common.keys import SigningKey


def stamp(second: int) -> str:
    return f"2026-11-23T12:00:{second:02d}.000000Z"


def moment(second: int) -> datetime:
    return datetime.fromisoformat(stamp(second).replace("Z", "+00:00"))


@pytest.fixture
def engine(audit_db: str) -> Iterator[sa.Engine]:
    e = make_engine(audit_db)
    yield e
    e.dispose()


def insert(engine: sa.Engine, stamps: dict[int, str]) -> None:
    """Rows at chosen seqs and times (the query code reads only seq and recorded_at)."""
    rows = [
        {
            "seq": seq,
            "event_id": f"00000000-0000-7000-8000-{seq:012d}",
            "recorded_at": at,
            "action": "read",
            "type": "invoice.read",
            "outcome": "success",
            "actor_sub": "u",
            "source": "cef-api",
            "canonical": b"{}",
            "prev_hash": "0" * 64,
            "hash": "0" * 64,
        }
        for seq, at in stamps.items()
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(audit_events), rows)


def index_bounds(engine: sa.Engine, since: str, until: str) -> tuple[int, int]:
    """What the (recorded_at, seq) index answered: the first seq at or after `since` (-1: none),
    the last seq before `until` (0: none)."""
    c = audit_events.c
    with engine.connect() as conn:
        low = conn.execute(
            sa.select(c.seq).where(c.recorded_at >= since).order_by(c.recorded_at, c.seq).limit(1)
        ).scalar_one_or_none()
        high = conn.execute(
            sa.select(c.seq)
            .where(c.recorded_at < until)
            .order_by(c.recorded_at.desc(), c.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
    return (-1 if low is None else low), (0 if high is None else high)


def bounds(engine: sa.Engine, since: int, until: int) -> tuple[int | None, int | None]:
    with engine.connect() as conn:
        return _seq_bounds(conn, EventFilter(since=moment(since), until=moment(until)))


LAYOUTS = {
    # seconds of events 1, 2, 3, …: one each, runs of equal times, and one time for everything
    "distinct": [10, 11, 12, 13, 14, 15, 16],
    "runs": [10, 10, 10, 12, 12, 13, 13, 13, 13, 20, 20, 21],
    "all equal": [15] * 40,
    "one event": [15],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_binary_search_gives_the_bounds_the_index_gave(engine: sa.Engine, layout: str) -> None:
    seconds = LAYOUTS[layout]
    insert(engine, {seq: stamp(s) for seq, s in enumerate(seconds, start=1)})
    # Every pair of bounds from before the first event to after the last, on and between times.
    for since in range(8, 24):
        for until in range(8, 24):
            assert bounds(engine, since, until) == index_bounds(engine, stamp(since), stamp(until)), (
                since,
                until,
            )


def test_an_empty_log_has_empty_bounds(engine: sa.Engine) -> None:
    assert bounds(engine, 10, 20) == (-1, 0) == index_bounds(engine, stamp(10), stamp(20))
    with engine.connect() as conn:
        assert first_seq_at_or_after(conn, stamp(0)) is None


def test_microseconds_count(engine: sa.Engine) -> None:
    insert(engine, {1: "2026-11-23T12:00:00.000001Z", 2: "2026-11-23T12:00:00.000002Z"})
    with engine.connect() as conn:
        assert first_seq_at_or_after(conn, "2026-11-23T12:00:00.000002Z") == 2
        assert first_seq_at_or_after(conn, "2026-11-23T12:00:00.000003Z") is None
        assert first_seq_at_or_after(conn, "2026-11-23T12:00:00.000000Z") == 1


def test_missing_seqs_are_stepped_over(engine: sa.Engine) -> None:
    # A deleted event (which verify reports) must not make a query loop or skip a match.
    present = {seq: stamp(10 + seq // 3) for seq in range(1, 30) if seq not in (1, 2, 7, 8, 9, 15, 29)}
    insert(engine, present)
    for since in range(8, 22):
        for until in range(8, 22):
            low, high = bounds(engine, since, until)
            expected = [s for s, at in present.items() if stamp(since) <= at < stamp(until)]
            assert [s for s in present if (low or 0) > 0 and low <= s <= (high or 0)] == expected


def test_time_windows_over_appended_events(engine: sa.Engine) -> None:
    # Through the sequencer: many events share each recorded_at (one per batch).
    log = AuditLog(engine, signing_key=SigningKey.generate())
    producer = Recorder(sub="cef-api")
    for b in range(5):
        log.append([make_event(b * 10 + i) for i in range(7)], recorded_by=producer)
    with engine.connect() as conn:
        stamps = [r[0] for r in conn.exec_driver_sql("SELECT recorded_at FROM audit_events ORDER BY seq")]
    for since in sorted(set(stamps)) + ["2000-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"]:
        for until in sorted(set(stamps)) + ["2999-01-01T00:00:00.000000Z"]:
            with engine.connect() as conn:
                got = _seq_bounds(
                    conn,
                    EventFilter(
                        since=datetime.fromisoformat(since.replace("Z", "+00:00")),
                        until=datetime.fromisoformat(until.replace("Z", "+00:00")),
                    ),
                )
            assert got == index_bounds(engine, since, until)


def rare_outcome_log(engine: sa.Engine) -> list[str]:
    log = AuditLog(engine, signing_key=SigningKey.generate())
    outcomes = ["denied" if n % 37 == 5 else "failure" if n % 23 == 7 else "success" for n in range(300)]
    events = [make_event(n, outcome=o) for n, o in enumerate(outcomes)]
    log.append(events[:150], recorded_by=Recorder(sub="cef-api"))
    log.append(events[150:], recorded_by=Recorder(sub="cef-api"))
    return outcomes


@pytest.mark.parametrize(
    "wanted",
    [("denied",), ("failure",), ("denied", "failure"), ("success",), ("success", "denied")],
)
def test_outcome_queries_find_every_match(engine: sa.Engine, wanted: tuple[str, ...]) -> None:
    outcomes = rare_outcome_log(engine)
    expected = [seq for seq, o in enumerate(outcomes, start=1) if o in wanted]
    for order in ("asc", "desc"):
        got: list[int] = []
        after = None
        while True:
            items, after = list_events(engine, EventFilter(outcome=wanted), limit=7, after=after, order=order)
            got.extend(i["seq"] for i in items)
            if after is None:
                break
        assert got == (expected if order == "asc" else expected[::-1])


@pytest.mark.parametrize("wanted", [("denied",), ("failure",), ("denied", "failure")])
def test_rare_outcome_queries_can_use_the_partial_index(engine: sa.Engine, wanted: tuple[str, ...]) -> None:
    """The planner may choose another plan on a small table; what matters is that the query as the
    repository builds it lets the planner use the partial index at all (a rare value must never
    force a scan of the log)."""
    rare_outcome_log(engine)
    c = audit_events.c
    with engine.connect() as conn:
        stmt = sa.select(c.seq).where(*_where(conn, EventFilter(outcome=wanted)))
        compiled = stmt.compile(engine, compile_kwargs={"render_postcompile": True})
        sql = str(compiled)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            params = tuple(compiled.params[k] for k in compiled.positiontup or ())
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        else:
            names = re.findall(r"%\((\w+)\)s", sql)
            params = tuple(compiled.params[n] for n in names)
            for i, n in enumerate(names, start=1):
                sql = sql.replace(f"%({n})s", f"${i}", 1)
            cursor.execute("ANALYZE audit_events")
            # Rule out everything but an index on outcome, and the plan prepared for any parameter
            # values (a generic plan, as PostgreSQL makes for a statement prepared and reused).
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute("PREPARE q AS " + sql)
            values = psycopg.sql.SQL(", ").join(psycopg.sql.Literal(p) for p in params)
            cursor.execute(psycopg.sql.SQL("EXPLAIN EXECUTE q ({})").format(values))
        plan = " ".join(str(row) for row in cursor.fetchall())
        cursor.close()
        conn.rollback()
    assert "ix_audit_events_rare_outcome_seq" in plan, plan
