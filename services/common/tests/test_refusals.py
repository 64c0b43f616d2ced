"""Refusals as audit events: one per refusal, with the route template and no raw free value, at most
a limit per caller per window, the rest counted and the count recorded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from cef_common.audit import AuditActor, AuditEventIn
from cef_common.auth import TokenSigner
from cef_common.refusals import OVERFLOW, REFUSED, SUPPRESSED, RefusalAuditor
from cef_common.testing import app_client


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.events: list[AuditEventIn] = []

    def __call__(self, events: Sequence[AuditEventIn]) -> None:
        self.events.extend(events)

    def of(self, type_: str) -> list[AuditEventIn]:
        return [e for e in self.events if e.type == type_]


def _event(n: int = 0) -> AuditEventIn:
    return AuditEventIn(
        action="read", type=REFUSED, outcome="denied", actor=AuditActor(sub="x"), source="t", detail={"n": n}
    )


def _auditor(clock: Clock, sink: Sink, **kwargs: Any) -> RefusalAuditor:
    auditor = RefusalAuditor(source="t", clock=clock, **{"limit": 3, "window_seconds": 60, **kwargs})
    auditor.start(sink, tick=False)
    return auditor


def test_beyond_the_limit_refusals_are_counted_and_the_count_recorded_when_the_window_closes() -> None:
    clock, sink = Clock(), Sink()
    auditor = _auditor(clock, sink)
    alice, bob = AuditActor(sub="alice", issuer="idp"), AuditActor(sub="bob", issuer="idp")
    admitted = [auditor.record(_event(n), caller_key="alice", actor=alice) for n in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert auditor.record(_event(), caller_key="bob", actor=bob)
    assert len(sink.of(REFUSED)) == 4
    assert sink.of(SUPPRESSED) == []
    clock.now += 59
    auditor.flush_closed()
    assert sink.of(SUPPRESSED) == []
    clock.now += 1
    auditor.flush_closed()
    [suppressed] = sink.of(SUPPRESSED)
    assert suppressed.actor == alice
    assert (suppressed.detail["dropped"], suppressed.detail["recorded"]) == (7, 3)
    assert suppressed.detail["window_seconds"] == 60
    # A new window: alice is recorded again.
    assert auditor.record(_event(), caller_key="alice", actor=alice)
    auditor.close()
    assert len(sink.of(SUPPRESSED)) == 1


def test_a_window_still_open_at_shutdown_has_its_count_recorded() -> None:
    clock, sink = Clock(), Sink()
    auditor = _auditor(clock, sink)
    for _ in range(5):
        auditor.record(_event(), caller_key="k", actor=AuditActor(sub="anonymous"))
    auditor.close()
    [suppressed] = sink.of(SUPPRESSED)
    assert suppressed.detail["dropped"] == 2


def test_callers_beyond_the_cap_share_one_count() -> None:
    clock, sink = Clock(), Sink()
    auditor = _auditor(clock, sink, limit=1, max_callers=2)
    for key in ("a", "b", "c", "d", "e"):
        auditor.record(_event(), caller_key=key, actor=AuditActor(sub=key, issuer="idp"))
    # a and b have their own windows; c, d and e share the overflow window (one recorded, two counted).
    assert len(sink.of(REFUSED)) == 3
    assert len(auditor._windows) == 3
    auditor.close()
    [suppressed] = sink.of(SUPPRESSED)
    assert (suppressed.detail["caller"], suppressed.detail["dropped"]) == (OVERFLOW, 2)
    assert suppressed.actor.sub == "anonymous"


def test_concurrent_refusals_of_one_caller_never_exceed_the_limit() -> None:
    clock, sink = Clock(), Sink()
    auditor = _auditor(clock, sink, limit=20)
    barrier = threading.Barrier(8)

    def flood() -> None:
        barrier.wait()
        for _ in range(250):
            auditor.record(_event(), caller_key="k", actor=AuditActor(sub="anonymous"))

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    auditor.close()
    assert len(sink.of(REFUSED)) == 20
    assert [e.detail["dropped"] for e in sink.of(SUPPRESSED)] == [2000 - 20]


def test_events_a_failing_sink_could_not_take_are_written_once_it_works_again() -> None:
    written: list[AuditEventIn] = []
    working = False

    def sink(events: Sequence[AuditEventIn]) -> None:
        if not working:
            raise OSError("the database is restarting")
        written.extend(events)

    auditor = RefusalAuditor(source="t")
    auditor.start(sink, tick=False)
    first, second = _event(1), _event(2)
    # The refusal stands whether or not its event could be written at once.
    assert auditor.record(first, caller_key="k", actor=AuditActor(sub="anonymous"))
    assert written == []
    working = True
    auditor.record(second, caller_key="k", actor=AuditActor(sub="anonymous"))
    assert [e.event_id for e in written] == [first.event_id, second.event_id]
    auditor.close()
    assert len(written) == 2


def test_a_sink_still_failing_at_shutdown_keeps_the_refusal_standing() -> None:
    def broken(events: Sequence[AuditEventIn]) -> None:
        raise OSError("disk full")

    auditor = RefusalAuditor(source="t")
    auditor.start(broken, tick=False)
    assert auditor.record(_event(), caller_key="k", actor=AuditActor(sub="anonymous"))
    auditor.close()


# --- over HTTP --------------------------------------------------------------------------------------


@pytest.fixture
async def refusing(make_app: Any) -> Any:
    app = make_app()
    sink = Sink()
    async with app_client(app) as client:
        app.state.refusals.sink = sink
        yield client, sink


async def test_every_refusal_over_http_is_one_event_with_the_route_template(
    refusing: Any, dev_issuer: Any, stranger_key: Any
) -> None:
    client, sink = refusing
    nhs_shaped = "9990394083"
    path = f"/v1/orgs/{nhs_shaped}/things"
    forged = TokenSigner(stranger_key, "cef-dev").mint(
        sub="mallory", audience="common-test", scopes=["things:read"], ttl_seconds=60
    )
    cases = [
        ({}, 401, "no-token", "anonymous"),
        ({"Authorization": f"Bearer {nhs_shaped}"}, 401, "malformed-token", "anonymous"),
        ({"Authorization": f"Bearer {forged}"}, 401, "unknown-key", "anonymous"),
        (dev_issuer.headers("things:read", aud="tokeniser", sub="eve"), 401, "wrong-audience", "eve"),
        (dev_issuer.headers("things:read", aud="common-test", ttl=-120, sub="old"), 401, "expired", "old"),
        (dev_issuer.headers("other", aud="common-test", sub="bob"), 403, "insufficient-scope", "bob"),
        (
            dev_issuer.headers("things:read", aud="common-test", org="RTR"),
            403,
            "other-organisation",
            "tester",
        ),
    ]
    for headers, status, reason, sub in cases:
        before = len(sink.events)
        r = await client.get(path, headers=headers)
        assert r.status_code == status, reason
        [event] = sink.events[before:]
        assert (event.type, event.outcome, event.source) == (REFUSED, "denied", "common-test")
        assert event.actor.sub == sub
        assert event.detail["route"] == "/v1/orgs/{org}/things"
        assert (event.detail["method"], event.detail["status"], event.detail["reason"]) == (
            "GET",
            status,
            reason,
        )
        if sub == "anonymous" and "Authorization" in headers:
            assert event.detail["token"]["length"] == len(headers["Authorization"]) - len("Bearer ")
    dumped = orjson.dumps([e.model_dump(mode="json") for e in sink.events]).decode()
    assert nhs_shaped not in dumped
    assert "mallory" not in dumped


async def test_a_plain_not_found_is_no_refusal(refusing: Any, dev_issuer: Any) -> None:
    client, sink = refusing
    r = await client.get("/v1/missing", headers=dev_issuer.headers("things:read", aud="common-test"))
    assert r.status_code == 404
    assert sink.events == []
