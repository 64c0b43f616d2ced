"""Audit events as producers build them, and the transactional outbox that delivers them.

A producer writes each event to `audit_outbox` in its own database, in the same transaction as
the change it records; `OutboxRelay` delivers them to the audit service in order, in batches,
with retries, and marks them delivered. The audit service is idempotent by `event_id`, so a
batch that is retried after a lost response is never stored twice.

A batch is delivered within the trace of the request that recorded its first event (remembered
in memory, by event id, while the event waits), so a trace reaches the audit service too."""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import sqlalchemy as sa
import structlog
from opentelemetry import context as otel_context
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel

from cef_common import tracing
from cef_common.auth import Principal
from cef_common.context import current_traceparent, request_id_var
from cef_common.logging import mask_text, mask_value
from cef_common.openapi import model_examples

log = structlog.get_logger(__name__)

AuditAction = Literal["create", "read", "update", "delete", "execute"]
AuditOutcome = Literal["success", "failure", "denied"]


class AuditActor(BaseModel):
    sub: str
    org: str | None = None
    client: str | None = None
    issuer: str | None = None


class AuditEntity(BaseModel):
    type: str
    id: str | None = None
    count: int | None = None


def time_ordered_uuid() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Event ids are the audit log's idempotency key and so carry a unique index; ids that grow with
    time are inserted at the end of that index instead of on a random page of it, which keeps
    appends to a log of millions of events from rewriting pages all over the index."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | ((rand >> 62) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)


# The OpenAPI document's example of an event (synthetic: a made-up invoice id and subject).
EVENT_EXAMPLE: dict[str, Any] = {
    "event_id": "019383f2-7c1a-7b3e-9d4f-2a6b8c0d1e2f",
    "occurred_at": "2026-11-23T09:00:01.250000Z",
    "action": "read",
    "type": "invoice.lines.read",
    "outcome": "success",
    "actor": {
        "sub": "staff-0042",
        "org": "00L",
        "client": "cef-web",
        "issuer": "https://login.example.nhs.uk",
    },
    "source": "cef-api",
    "entity": {"type": "invoice", "id": "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d", "count": 25},
    "purpose": None,
    "request_id": "5f0c2a9e8b7d4c3a",
    "detail": {"outcome": "query", "with": "patient_token"},
}


class AuditEventIn(BaseModel):
    """An event as a producer submits it; the audit service adds seq, recorded_at and hashes."""

    model_config = ConfigDict(json_schema_extra=model_examples([EVENT_EXAMPLE]))

    event_id: uuid.UUID = Field(default_factory=time_ordered_uuid)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    action: AuditAction
    type: str = Field(min_length=1, max_length=100, description="e.g. invoice.submit, patient.detokenise")
    subtype: str | None = Field(default=None, max_length=100)
    outcome: AuditOutcome
    actor: AuditActor
    source: str = Field(min_length=1, max_length=50)
    entity: AuditEntity | None = None
    purpose: str | None = Field(default=None, max_length=1000)
    request_id: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict)


def actor_of(principal: Principal | None) -> AuditActor:
    if principal is None:
        return AuditActor(sub="anonymous")
    return AuditActor(sub=principal.sub, org=principal.org, client=principal.client, issuer=principal.issuer)


def build_event(
    *,
    source: str,
    action: AuditAction,
    type: str,
    outcome: AuditOutcome,
    principal: Principal | None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    count: int | None = None,
    purpose: str | None = None,
    subtype: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEventIn:
    entity = AuditEntity(type=entity_type, id=entity_id, count=count) if entity_type else None
    return AuditEventIn(
        action=action,
        type=type,
        subtype=subtype,
        outcome=outcome,
        actor=actor_of(principal),
        source=source,
        entity=entity,
        purpose=purpose,
        request_id=request_id_var.get(),
        detail=detail or {},
    )


class AuditOutbox(SQLModel, table=True):
    """Events waiting to reach the audit service (and, once delivered, a local record)."""

    __tablename__ = "audit_outbox"

    id: int | None = SQLField(default=None, primary_key=True)
    event_id: str = SQLField(max_length=36, unique=True)
    payload: str
    created_at: datetime
    delivered_at: datetime | None = SQLField(default=None, index=True)
    attempts: int = 0


def outbox_table_ddl() -> list[sa.Column[Any]]:
    """Columns for the outbox table, for the producers' migrations."""
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    ]


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def _masked(text: str) -> bool:
    return mask_text(text) != text


def holds_nul(text: str) -> bool:
    # PostgreSQL's text cannot hold U+0000, and no reader of an exported log expects one.
    return "\x00" in text


def identifier_in_event(value: Any, path: str = "", refused: Callable[[str], bool] = _masked) -> str | None:
    """Where in an event (a dotted path) a string the log mask would change sits (or, given
    `refused`, a string it refuses), None when nowhere. The audit log keeps what it is given for
    ever and answers it to auditors: it refuses an identifier rather than hold one. Keys of
    `detail` are named only when they are plain names."""
    if isinstance(value, str):
        return (path or "event") if refused(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        # A ten-digit number too, as the log mask has it: an NHS number fits in a JSON number.
        return (path or "event") if refused is _masked and mask_value(value) != value else None
    if isinstance(value, dict):
        for key, item in value.items():
            text = str(key)
            name = text if _PLAIN_KEY.match(text) and not _masked(text) else "(a key)"
            here = f"{path}.{name}" if path else name
            if refused(text):
                return here
            found = identifier_in_event(item, here, refused)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = identifier_in_event(item, f"{path}.{i}" if path else str(i), refused)
            if found is not None:
                return found
    return None


class EventHoldsIdentifier(RuntimeError):
    """An event the audit service would refuse (a value shaped like an identifier): a fault of the
    code that built it. Refused where it is recorded, so it fails that request instead of stopping
    the outbox, which delivers in order, at an event the audit service will never take."""


class _EventTraces:
    """The traceparent of the request that recorded each event not yet delivered, by event id: in
    memory only (a restart forgets it, and the delivery then starts a trace of its own), bounded
    (the oldest are forgotten first)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._traces: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, event_id: str) -> None:
        traceparent = current_traceparent()
        if traceparent is None:
            return
        with self._lock:
            self._traces[event_id] = traceparent
            while len(self._traces) > self.limit:
                self._traces.popitem(last=False)

    def first_of(self, event_ids: Sequence[str]) -> str | None:
        with self._lock:
            return next((t for e in event_ids if (t := self._traces.get(e)) is not None), None)

    def forget(self, event_ids: Sequence[str]) -> None:
        with self._lock:
            for event_id in event_ids:
                self._traces.pop(event_id, None)


EVENT_TRACES = _EventTraces()


def record_event(session: Session, event: AuditEventIn) -> None:
    """Adds the event to the caller's transaction: it is durable exactly when the change is."""
    dumped = event.model_dump(mode="json", exclude={"event_id", "occurred_at"})
    where = identifier_in_event(dumped) or identifier_in_event(dumped, refused=holds_nul)
    if where is not None:
        raise EventHoldsIdentifier(f"the {event.type} event's {where} is shaped like an identifier")
    session.add(
        AuditOutbox(
            event_id=str(event.event_id),
            payload=event.model_dump_json(),
            created_at=datetime.now(UTC),
        )
    )
    EVENT_TRACES.remember(str(event.event_id))


def record_events(session: Session, events: Sequence[AuditEventIn]) -> None:
    for event in events:
        record_event(session, event)


def _acknowledged(response: httpx.Response) -> set[str]:
    """The event ids an audit service's answer to POST /v1/events confirms as stored."""
    try:
        results = response.json()["results"]
        return {str(r["event_id"]) for r in results}
    except (KeyError, TypeError, ValueError):
        raise ValueError("the audit service's answer does not list the events it stored") from None


class OutboxRelay:
    """Delivers outbox rows to the audit service in order, in batches, with backoff."""

    def __init__(
        self,
        engine: Engine,
        client_factory: Callable[[], httpx.Client],
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.engine = engine
        self.client_factory = client_factory
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def _pending(self, session: Session) -> list[AuditOutbox]:
        stmt = (
            sa.select(AuditOutbox)
            .where(AuditOutbox.delivered_at.is_(None))  # type: ignore[union-attr]
            .order_by(AuditOutbox.id)  # type: ignore[arg-type]
            .limit(self.batch_size)
        )
        return list(session.execute(stmt).scalars())

    def pending_count(self) -> int:
        with Session(self.engine) as session:
            stmt = (
                sa.select(sa.func.count())
                .select_from(AuditOutbox)
                .where(
                    AuditOutbox.delivered_at.is_(None)  # type: ignore[union-attr]
                )
            )
            return int(session.execute(stmt).scalar_one())

    def deliver_once(self) -> int:
        """Delivers one batch; returns how many were delivered (0 when none were pending).

        A row is marked delivered only when the audit service's answer names its event id (as
        stored or as a duplicate of one already stored); anything else stays pending and is sent
        again, which the service's idempotency by event id makes harmless."""
        with self._lock, Session(self.engine) as session:
            rows = self._pending(session)
            if not rows:
                return 0
            body = b'{"events":[' + b",".join(r.payload.encode() for r in rows) + b"]}"
            if self._client is None:
                self._client = self.client_factory()
            event_ids = [r.event_id for r in rows]
            # The delivery continues the trace of the request that recorded the batch's first event.
            origin = tracing.context_from_traceparent(EVENT_TRACES.first_of(event_ids))
            attached = otel_context.attach(origin) if origin is not None else None
            try:
                response = self._client.post(
                    "/v1/events", content=body, headers={"Content-Type": "application/json"}
                )
                response.raise_for_status()
                acknowledged = _acknowledged(response)
            except (httpx.HTTPError, ValueError):
                ids = [r.id for r in rows]
                session.execute(
                    sa.update(AuditOutbox)
                    .where(AuditOutbox.id.in_(ids))  # type: ignore[union-attr]
                    .values(attempts=AuditOutbox.attempts + 1)
                )
                session.commit()
                raise
            finally:
                if attached is not None:
                    otel_context.detach(attached)
            EVENT_TRACES.forget([e for e in event_ids if e in acknowledged])
            delivered = [r.id for r in rows if r.event_id in acknowledged]
            now = datetime.now(UTC)
            session.execute(
                sa.update(AuditOutbox)
                .where(AuditOutbox.id.in_(delivered))  # type: ignore[union-attr]
                .values(delivered_at=now)
            )
            session.commit()
            if len(delivered) < len(rows):
                raise ValueError(
                    f"the audit service acknowledged {len(delivered)} of {len(rows)} events; "
                    "the rest stay pending"
                )
            return len(rows)

    def drain(self) -> int:
        """Delivers until nothing is pending (raises on the first failure)."""
        total = 0
        while n := self.deliver_once():
            total += n
        return total

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                delivered = self.deliver_once()
                self.failures = 0
                backoff = self.poll_interval
                if delivered >= self.batch_size:
                    continue
            except Exception as exc:  # the relay must outlive any failure
                self.failures += 1
                backoff = min(self.max_backoff, max(self.poll_interval, backoff * 2))
                status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
                log.warning(
                    "audit_outbox_delivery_failed",
                    error=type(exc).__name__,
                    status=status,
                    attempt=self.failures,
                    retry_in=round(backoff, 1),
                )
            self._wake.wait(random.uniform(backoff / 2, backoff))
            self._wake.clear()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, *, flush_timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=flush_timeout)
        try:
            self.drain()
        except Exception as exc:  # what is left goes on next start
            log.info("audit_outbox_left_pending", error=type(exc).__name__)
        if self._client is not None:
            self._client.close()
