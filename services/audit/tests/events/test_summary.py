"""GET /v1/summary: counts of a period's events by type, outcome and organisation, over both databases."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from audit_test_support import event_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cef_audit.events.repository import EventFilter, count_events
from cef_audit.events.summary import summarise
from cef_audit.log import sequencer
from cef_audit.log.tables import audit_events
from cef_common.audit import AuditActor
from cef_common.db import make_engine

ORGS = ["00C", "RTR", None]
TYPES = ["invoice.read", "patient.reidentify", "access.refused"]
OUTCOMES = ["success", "failure", "denied"]  # the order of AuditOutcome


def stamp(day: int) -> str:
    return f"2026-11-{day:02d}T09:00:00.000000Z"


def _event(n: int) -> dict[str, Any]:
    org = ORGS[n % 3]
    return event_json(
        n,
        type=TYPES[n % 5 % 3],
        outcome=OUTCOMES[0] if n % 4 else OUTCOMES[1 + n % 8 // 4],
        actor=AuditActor(sub=f"user-{n % 2}", org=org) if org else AuditActor(sub="anonymous"),
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sequencer's clock, set by each test: batches recorded on chosen days."""
    now = [stamp(1)]
    monkeypatch.setattr(sequencer, "now_stamp", lambda: now[0])
    return now


async def _seed(client: Any, writer: dict[str, str], clock: list[str]) -> dict[int, list[dict[str, Any]]]:
    """Three batches of events, recorded on 2, 5 and 9 November."""
    batches = {2: [_event(n) for n in range(0, 20)], 5: [_event(n) for n in range(20, 27)], 9: [_event(27)]}
    for day, events in batches.items():
        clock[0] = stamp(day)
        r = await client.post("/v1/events", json={"events": events}, headers=writer)
        assert r.status_code == 201, r.text
    clock[0] = stamp(20)
    return batches


def _expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    by_type = Counter(e["type"] for e in events)
    by_outcome = Counter(dict.fromkeys(OUTCOMES, 0)) + Counter(e["outcome"] for e in events)
    return {
        "total": len(events),
        "by_type": dict(by_type),
        "by_outcome": {o: by_outcome[o] for o in OUTCOMES},
        "by_org": dict(Counter(e["actor"].get("org") or "(none)" for e in events)),
        "by_type_outcome": {
            t: dict(Counter(e["outcome"] for e in events if e["type"] == t)) for t in by_type
        },
    }


async def _summary(client: Any, reader: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await client.get("/v1/summary", params=params, headers=reader)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("since", "until")}


async def test_counts_in_all_by_type_outcome_and_organisation(
    client: Any, writer: dict[str, str], reader: dict[str, str], clock: list[str]
) -> None:
    batches = await _seed(client, writer, clock)
    everything = [e for events in batches.values() for e in events]
    summary = await _summary(client, reader)
    assert (summary["since"], summary["until"]) == (None, None)
    assert _counts(summary) == _expected(everything)
    # Most frequent first (ties by name); outcomes always all three, in their fixed order.
    assert list(summary["by_type"].values()) == sorted(summary["by_type"].values(), reverse=True)
    assert list(summary["by_outcome"]) == OUTCOMES
    assert summary["by_org"]["(none)"] == sum(1 for e in everything if not e["actor"].get("org"))
    assert list(summary["by_type_outcome"]) == list(summary["by_type"])
    assert all(sum(v.values()) == summary["by_type"][t] for t, v in summary["by_type_outcome"].items())

    # The summary's own event is counted by the next one.
    again = await _summary(client, reader)
    assert again["total"] == summary["total"] + 1
    assert again["by_type"]["audit.query"] == 1
    assert again["by_org"]["X26"] == 1  # the auditor's organisation


async def test_since_and_until_bound_the_period(
    client: Any, writer: dict[str, str], reader: dict[str, str], clock: list[str]
) -> None:
    batches = await _seed(client, writer, clock)
    window = await _summary(client, reader, since="2026-11-05T09:00:00Z", until="2026-11-09T09:00:00Z")
    assert (window["since"], window["until"]) == (stamp(5), stamp(9))
    assert _counts(window) == _expected(batches[5])
    # A time zone other than UTC is the same instant.
    shifted = await _summary(client, reader, since="2026-11-05T10:00:00+01:00", until="2026-11-09T09:00:00Z")
    assert _counts(shifted) == _counts(window)
    later = await _summary(client, reader, since="2026-11-03T00:00:00Z", until="2026-11-19T00:00:00Z")
    assert _counts(later) == _expected(batches[5] + batches[9])
    before = await _summary(client, reader, until="2026-11-02T09:00:00Z")
    assert _counts(before) == {
        "total": 0,
        "by_type": {},
        "by_outcome": dict.fromkeys(OUTCOMES, 0),
        "by_org": {},
        "by_type_outcome": {},
    }
    after = await _summary(client, reader, since="2026-11-30T00:00:00Z")
    assert after["total"] == 0


async def test_the_summary_is_itself_audited(
    client: Any, writer: dict[str, str], reader: dict[str, str], clock: list[str]
) -> None:
    batches = await _seed(client, writer, clock)
    await _summary(client, reader, since="2026-11-05T09:00:00Z", purpose="quarterly review")
    r = await client.get("/v1/events", params={"type": "audit.query"}, headers=reader)
    [query] = r.json()["items"]
    assert (query["subtype"], query["action"], query["actor"]["sub"]) == ("summary", "read", "auditor-1")
    assert query["purpose"] == "quarterly review"
    assert query["entity"]["count"] == len(batches[5]) + len(batches[9])
    assert query["detail"]["filters"] == {"since": stamp(5)}


async def test_bad_requests_are_refused_and_not_summarised(client: Any, reader: dict[str, str]) -> None:
    r = await client.get("/v1/summary", params={"since": "2026-11-05T09:00:00"}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "naive-datetime"
    r = await client.get("/v1/summary", params={"purpose": "patient born 01/02/1970"}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "purpose-holds-identifier"
    r = await client.get("/v1/events", params={"type": "audit.query"}, headers=reader)
    assert r.json()["items"] == []


async def test_401_and_403_are_refused_and_on_record(
    client: Any, writer: dict[str, str], reader: dict[str, str], dev_issuer: Any
) -> None:
    assert (await client.get("/v1/summary")).status_code == 401
    r = await client.get("/v1/summary", headers=writer)
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient-scope"
    refusals = (await client.get("/v1/events", params={"type": "access.refused"}, headers=reader)).json()[
        "items"
    ]
    assert [(e["detail"]["route"], e["detail"]["status"]) for e in refusals] == [
        ("/v1/summary", 401),
        ("/v1/summary", 403),
    ]


# The counting itself, straight against the repository: any period of a log whose events carry many
# distinct times is counted exactly as a count of the events recorded in it.
ROWS = 120


@pytest.fixture
def seeded(audit_db: str) -> Iterator[sa.Engine]:
    engine = make_engine(audit_db)
    rows = [
        {
            "seq": seq,
            "event_id": f"00000000-0000-7000-8000-{seq:012d}",
            "recorded_at": stamp(1 + seq // 5),  # five events to a day, days 1 to 25
            "action": "read",
            "type": TYPES[seq % 3],
            "outcome": OUTCOMES[seq % 7 % 3],
            "actor_sub": "u",
            "actor_org": ORGS[seq % 4 % 3],
            "source": "cef-api",
            "canonical": b"{}",
            "prev_hash": "0" * 64,
            "hash": "0" * 64,
        }
        for seq in range(1, ROWS + 1)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(audit_events), rows)
    yield engine
    engine.dispose()


def _moment(day: int, hour: int) -> datetime:
    return datetime.fromisoformat(f"2026-11-{day:02d}T{hour:02d}:00:00+00:00")


bounds = st.none() | st.builds(_moment, st.integers(1, 27), st.sampled_from([0, 9, 10]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(since=bounds, until=bounds)
def test_any_period_is_counted_exactly(
    seeded: sa.Engine, since: datetime | None, until: datetime | None
) -> None:
    # Read-only over the seeded rows: every example sees the same log.
    summary = summarise(count_events(seeded, EventFilter(since=since, until=until)), since=since, until=until)
    inside = [
        seq
        for seq in range(1, ROWS + 1)
        if (since is None or _moment(1 + seq // 5, 9) >= since)
        and (until is None or _moment(1 + seq // 5, 9) < until)
    ]
    assert summary["total"] == len(inside)
    assert summary["by_type"] == dict(
        sorted(Counter(TYPES[s % 3] for s in inside).items(), key=lambda kv: (-kv[1], kv[0]))
    )
    assert summary["by_outcome"] == {o: sum(1 for s in inside if OUTCOMES[s % 7 % 3] == o) for o in OUTCOMES}
    assert summary["by_org"] == dict(
        sorted(Counter(ORGS[s % 4 % 3] or "(none)" for s in inside).items(), key=lambda kv: (-kv[1], kv[0]))
    )
