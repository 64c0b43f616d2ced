"""The transactional outbox: events commit with the change they record, and the relay delivers them
in order, in batches, with retries, marking only what the audit service acknowledged."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from cef_common.audit import (
    AuditEventIn,
    AuditOutbox,
    EventHoldsIdentifier,
    OutboxRelay,
    build_event,
    outbox_table_ddl,
    record_event,
    record_events,
)
from cef_common.auth import Principal
from cef_common.context import request_id_var
from cef_common.db import make_engine
from cef_common.http import make_client


@pytest.fixture
def engine(db_kind: str, database_factory: Any) -> Iterator[sa.Engine]:
    url = database_factory(db_kind, None)
    engine = make_engine(url)
    # What a producer's migration does with outbox_table_ddl().
    table = sa.Table("audit_outbox", sa.MetaData(), *outbox_table_ddl())
    table.create(engine)
    yield engine
    engine.dispose()


PRINCIPAL = Principal(
    sub="clerk-1", issuer="cef-dev", scopes=frozenset({"invoices:submit"}), org="RX1", client="portal"
)


def event(n: int) -> AuditEventIn:
    return build_event(
        source="cef-api",
        action="create",
        type="invoice.submit",
        outcome="success",
        principal=PRINCIPAL,
        entity_type="invoice",
        entity_id=f"inv-{n}",
        count=n,
        purpose="payment",
        detail={"n": n},
    )


class FakeAudit:
    """An audit service answering POST /v1/events as the real one does (idempotent by event id)."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.requests: list[list[dict[str, Any]]] = []
        self.fail_with: int | None = None
        self.drop_connection = False
        self.acknowledge_only: int | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.drop_connection:
            raise httpx.ConnectError("connection refused", request=request)
        if self.fail_with is not None:
            return httpx.Response(self.fail_with, json={"code": "unavailable", "detail": "down"})
        assert request.url.path == "/v1/events"
        assert request.headers["authorization"] == "Bearer service-token"
        events = orjson.loads(request.content)["events"]
        self.requests.append(events)
        results = []
        for e in events:
            duplicate = e["event_id"] in self.stored
            if not duplicate:
                self.stored.append(e["event_id"])
            results.append(
                {
                    "event_id": e["event_id"],
                    "seq": self.stored.index(e["event_id"]) + 1,
                    "duplicate": duplicate,
                }
            )
        if self.acknowledge_only is not None:
            results = results[: self.acknowledge_only]
        return httpx.Response(201, json={"results": results, "length": len(self.stored)})


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


@pytest.fixture
def make_relay(engine: sa.Engine, audit: FakeAudit) -> Iterator[Callable[..., OutboxRelay]]:
    relays: list[OutboxRelay] = []

    def _make(**kwargs: Any) -> OutboxRelay:
        relay = OutboxRelay(
            engine,
            lambda: make_client(
                "http://audit.test",
                token=lambda: "service-token",
                retries=0,
                transport=httpx.MockTransport(audit.handler),
            ),
            **kwargs,
        )
        relays.append(relay)
        return relay

    yield _make
    for relay in relays:
        relay._stop.set()
        relay._wake.set()


def _commit(engine: sa.Engine, events: list[AuditEventIn]) -> None:
    with Session(engine) as session:
        record_events(session, events)
        session.commit()


def _outbox(engine: sa.Engine) -> list[tuple[str, bool, int]]:
    with Session(engine) as session:
        rows = session.execute(sa.select(AuditOutbox).order_by(AuditOutbox.id)).scalars()  # type: ignore[arg-type]
        return [(r.event_id, r.delivered_at is not None, r.attempts) for r in rows]


def test_build_event_carries_the_principal_and_request_id() -> None:
    token = request_id_var.set("req-42")
    try:
        e = event(3)
    finally:
        request_id_var.reset(token)
    assert e.actor.model_dump() == {"sub": "clerk-1", "org": "RX1", "client": "portal", "issuer": "cef-dev"}
    assert e.request_id == "req-42"
    assert e.entity is not None
    assert (e.entity.type, e.entity.id, e.entity.count) == ("invoice", "inv-3", 3)
    assert (
        build_event(source="x", action="read", type="t", outcome="denied", principal=None).actor.sub
        == "anonymous"
    )


def test_events_are_durable_exactly_when_the_change_is(engine: sa.Engine) -> None:
    with Session(engine) as session:
        record_event(session, event(1))
        session.rollback()
    assert _outbox(engine) == []
    e = event(2)
    with Session(engine) as session:
        record_event(session, e)
        session.commit()
    assert _outbox(engine) == [(str(e.event_id), False, 0)]
    with Session(engine) as session:
        payload = session.execute(sa.select(AuditOutbox.payload)).scalar_one()
    assert AuditEventIn.model_validate_json(payload) == e


def test_relay_delivers_in_order_in_batches(engine: sa.Engine, audit: FakeAudit, make_relay: Any) -> None:
    events = [event(i) for i in range(7)]
    _commit(engine, events)
    relay = make_relay(batch_size=3)
    assert relay.pending_count() == 7
    assert relay.drain() == 7
    assert [len(batch) for batch in audit.requests] == [3, 3, 1]
    assert audit.stored == [str(e.event_id) for e in events]
    assert [d for _, d, _ in _outbox(engine)] == [True] * 7
    assert relay.pending_count() == 0
    assert relay.deliver_once() == 0


def test_failures_keep_events_pending_and_count_attempts(
    engine: sa.Engine, audit: FakeAudit, make_relay: Any
) -> None:
    _commit(engine, [event(1), event(2)])
    relay = make_relay()
    audit.drop_connection = True
    with pytest.raises(httpx.ConnectError):
        relay.deliver_once()
    audit.drop_connection = False
    audit.fail_with = 503
    with pytest.raises(httpx.HTTPStatusError):
        relay.deliver_once()
    assert [(d, a) for _, d, a in _outbox(engine)] == [(False, 2), (False, 2)]
    audit.fail_with = None
    assert relay.drain() == 2
    assert len(audit.stored) == 2


def test_only_acknowledged_events_are_marked(engine: sa.Engine, audit: FakeAudit, make_relay: Any) -> None:
    _commit(engine, [event(i) for i in range(3)])
    relay = make_relay()
    audit.acknowledge_only = 1
    with pytest.raises(ValueError, match="acknowledged 1 of 3"):
        relay.deliver_once()
    assert [d for _, d, _ in _outbox(engine)] == [True, False, False]
    audit.acknowledge_only = None
    assert relay.drain() == 2
    # Redelivered events the service already held are duplicates there, never stored twice.
    assert len(audit.stored) == 3


def test_an_answer_without_results_is_not_taken_as_delivery(engine: sa.Engine, make_relay: Any) -> None:
    _commit(engine, [event(1)])
    relay = OutboxRelay(
        engine,
        lambda: make_client(
            "http://audit.test",
            retries=0,
            transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})),
        ),
    )
    with pytest.raises(ValueError, match="does not list"):
        relay.deliver_once()
    assert relay.pending_count() == 1


def test_background_relay_backs_off_and_catches_up(
    engine: sa.Engine, audit: FakeAudit, make_relay: Any
) -> None:
    relay = make_relay(poll_interval=0.02, max_backoff=0.1)
    audit.drop_connection = True
    relay.start()
    _commit(engine, [event(i) for i in range(5)])
    relay.wake()
    deadline = time.monotonic() + 10
    while relay.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.failures >= 2
    assert relay.pending_count() == 5
    audit.drop_connection = False
    while relay.pending_count() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.pending_count() == 0
    assert relay.failures == 0
    relay.stop()
    assert len(audit.stored) == 5


def test_stop_flushes_what_is_pending(engine: sa.Engine, audit: FakeAudit, make_relay: Any) -> None:
    relay = make_relay(poll_interval=60)
    relay.start()
    _commit(engine, [event(1)])
    relay.stop()
    assert len(audit.stored) == 1


def test_outbox_rows_keep_the_exact_payload(engine: sa.Engine, audit: FakeAudit, make_relay: Any) -> None:
    e = event(9)
    with Session(engine) as session:
        session.add(
            AuditOutbox(event_id=str(e.event_id), payload=e.model_dump_json(), created_at=datetime.now(UTC))
        )
        session.commit()
    make_relay().drain()
    assert AuditEventIn.model_validate(audit.requests[0][0]) == e


def test_event_ids_are_time_ordered_uuids() -> None:
    from cef_common.audit import time_ordered_uuid

    first = time_ordered_uuid()
    time.sleep(0.002)
    later = [time_ordered_uuid() for _ in range(1000)]
    assert first.version == 7
    assert first.variant == "specified in RFC 4122"
    # Later milliseconds sort later, as text too: appends land at the end of the event_id index.
    assert all(str(first) < str(x) for x in later)
    assert len(set(later)) == 1000
    assert event(1).event_id.version == 7


@pytest.mark.parametrize(
    ("detail", "where"),
    [
        ({"paid_on": "2019-06-28"}, "detail.paid_on"),
        ({"note": "patient 943 476 5919"}, "detail.note"),
        ({"lines": [{"postcode": "TS18 1HU"}]}, "detail.lines.0.postcode"),
        ({"number": 9434765919}, "detail.number"),
        ({"nul": "a\x00b"}, "detail.nul"),
    ],
)
def test_an_event_the_audit_service_would_refuse_is_refused_where_it_is_recorded(
    engine: sa.Engine, detail: dict[str, Any], where: str
) -> None:
    """Else it would sit at the head of the outbox for ever: the relay delivers in order."""
    bad = build_event(
        source="cef-api",
        action="update",
        type="invoice.payment",
        outcome="success",
        principal=PRINCIPAL,
        detail=detail,
    )
    with Session(engine) as session, pytest.raises(EventHoldsIdentifier, match=where.replace(".", r"\.")):
        record_event(session, bad)
    with Session(engine) as session:
        record_event(session, event(1))  # a timestamp, ids and counts are fine
        session.commit()
        assert session.execute(sa.select(sa.func.count()).select_from(AuditOutbox)).scalar_one() == 1
