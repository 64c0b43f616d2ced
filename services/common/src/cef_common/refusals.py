"""Every refusal a service gives (401, 403, and a 404 that hides a resource) as one audit event.

`RefusalAuditor` is installed by `create_service_app` and called by the `AppError` handler before
the refusal is sent, so a refusal within the limit is durable (written in its own transaction by
the service's sink) before the caller hears of it. A flood of refusals from one caller cannot flood
the log: each caller gets `limit` events per window, the rest are counted, and the count is itself
recorded (`access.refusals_suppressed`) when the window closes or the service stops.

An event names the route by its template (`/v1/invoices/{invoice_id}`), never the raw path, and
the caller only as far as it is verified: a principal, or the claims of a token whose signature
verified though it was refused (expired, for another audience); otherwise the caller is
anonymous and what it sent (its token, its address) is recorded only as a keyed digest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine
from sqlmodel import Session

from cef_common.audit import AuditAction, AuditActor, AuditEventIn, build_event, record_events
from cef_common.auth import Principal
from cef_common.errors import AppError, Unauthorized, route_template
from cef_common.metrics import BoundedLabel
from cef_common.redact import digest

log = structlog.get_logger(__name__)

REFUSED = "access.refused"
SUPPRESSED = "access.refusals_suppressed"
# The key that callers beyond `max_callers` share, so memory stays bounded whoever calls.
OVERFLOW = "overflow"
# Refusal events kept in memory while the sink fails; beyond this the oldest are dropped (and counted
# in the log), so a long database outage cannot exhaust memory.
MAX_PENDING = 10_000

RefusalSink = Callable[[Sequence[AuditEventIn]], None]

_ACTIONS: dict[str, AuditAction] = {
    "GET": "read",
    "HEAD": "read",
    "POST": "create",
    "PUT": "update",
    "PATCH": "update",
    "DELETE": "delete",
}


def outbox_sink(engine: Engine) -> RefusalSink:
    """A producer's sink: the events in the transactional outbox, committed on their own."""

    def write(events: Sequence[AuditEventIn]) -> None:
        with Session(engine) as session:
            record_events(session, events)
            session.commit()

    return write


def _text(value: object, longest: int = 200) -> str | None:
    return value[:longest] if isinstance(value, str) and value else None


def _verified_actor(claims: dict[str, Any]) -> AuditActor:
    """The caller a token names whose signature verified (from a trusted issuer, though refused)."""
    return AuditActor(
        sub=_text(claims.get("sub")) or "anonymous",
        org=_text(claims.get("org"), 64),
        client=_text(claims.get("client_id")) or _text(claims.get("azp")),
        issuer=_text(claims.get("iss")),
    )


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@dataclass
class _Window:
    started: float
    started_at: datetime
    recorded: int
    dropped: int
    actor: AuditActor
    detail: dict[str, Any]


class RefusalAuditor:
    """Records refusals through a sink, at most `limit` per caller per window; thread-safe."""

    def __init__(
        self,
        *,
        source: str,
        limit: int = 20,
        window_seconds: float = 60.0,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.source = source
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_callers = max_callers
        self.clock = clock
        self.sink: RefusalSink | None = None
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Events a failed write left, written first by the next write (guarded by _write_lock).
        self._pending: list[AuditEventIn] = []
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        # Every refusal counted by its code (a constant of the code that refused, e.g.
        # insufficient-scope), recorded in the log or not: the metric sees floods the log withholds.
        self._codes = BoundedLabel()
        self.refusals = (
            Counter(
                "cef_refusals",
                "Requests refused (401, 403, or a 404 hiding a resource), by status and code.",
                ["status", "code"],
                registry=registry,
            )
            if registry is not None
            else None
        )

    # --- life ------------------------------------------------------------------------------------

    def start(self, sink: RefusalSink, *, tick: bool = True) -> None:
        """Starts recording through `sink`; with `tick`, closed windows are flushed on a timer too
        (otherwise at the next refusal and at `close`)."""
        self.sink = sink
        self._stop.clear()
        if tick:
            self._ticker = threading.Thread(target=self._tick, name="refusal-windows", daemon=True)
            self._ticker.start()

    def close(self) -> None:
        """Records what is still counted (windows not yet closed) and stops recording."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self._lock:
            pending = [self._suppressed(w) for w in self._windows.values() if w.dropped]
            self._windows.clear()
        self._write(pending)
        self.sink = None

    def _tick(self) -> None:
        interval = min(self.window_seconds, 5.0)
        while not self._stop.wait(interval):
            self.flush_closed()

    # --- recording -------------------------------------------------------------------------------

    def flush_closed(self) -> None:
        """Records the suppression counts of windows that have closed."""
        with self._lock:
            events = self._take_closed(self.clock())
        self._write(events)

    def record(self, event: AuditEventIn, *, caller_key: str, actor: AuditActor) -> bool:
        """Records `event` unless its caller is over the limit (then it is counted); returns whether
        it was recorded. Returns once what it records is durable."""
        now = self.clock()
        with self._lock:
            events = self._take_closed(now)
            window = self._windows.get(caller_key)
            if window is None:
                if len(self._windows) >= self.max_callers:
                    caller_key = OVERFLOW
                    window = self._windows.get(OVERFLOW)
                    actor = AuditActor(sub="anonymous")
                if window is None:
                    window = _Window(
                        started=now,
                        started_at=datetime.now(UTC),
                        recorded=0,
                        dropped=0,
                        actor=actor,
                        detail={"caller": caller_key} if caller_key == OVERFLOW else {},
                    )
                    self._windows[caller_key] = window
            admitted = window.recorded < self.limit
            if admitted:
                window.recorded += 1
                events.append(event)
            else:
                window.dropped += 1
        self._write(events)
        return admitted

    def _take_closed(self, now: float) -> list[AuditEventIn]:
        closed = [k for k, w in self._windows.items() if now - w.started >= self.window_seconds]
        events = []
        for key in closed:
            window = self._windows.pop(key)
            if window.dropped:
                events.append(self._suppressed(window))
        return events

    def _suppressed(self, window: _Window) -> AuditEventIn:
        return AuditEventIn(
            action="execute",
            type=SUPPRESSED,
            outcome="denied",
            actor=window.actor,
            source=self.source,
            detail={
                **window.detail,
                "dropped": window.dropped,
                "recorded": window.recorded,
                "window_seconds": self.window_seconds,
                "window_started_at": window.started_at.isoformat(),
            },
        )

    def _write(self, events: list[AuditEventIn]) -> None:
        """Writes `events` after any that an earlier failed write left; what fails now is kept (up
        to MAX_PENDING) and tried again with the next write or tick, e.g. once the service's own
        database is back."""
        sink = self.sink
        with self._write_lock:
            batch = [*self._pending, *events]
            if not batch:
                return
            if sink is None:
                self._keep(batch, "no sink")
                return
            try:
                sink(batch)
            except Exception as exc:  # the refusal stands; its event waits for the next write
                self._keep(batch, type(exc).__name__)
                return
            self._pending = []

    def _keep(self, batch: list[AuditEventIn], reason: str) -> None:
        lost = max(0, len(batch) - MAX_PENDING)
        self._pending = batch[lost:]
        log.error("refusal_not_recorded_yet", events=len(self._pending), lost=lost, reason=reason)

    # --- requests --------------------------------------------------------------------------------

    def count(self, exc: AppError) -> None:
        """Counts a refusal in the metrics: every refusal an error handler answers, whether the
        shared hook or the service's own code recorded its event."""
        if self.refusals is not None:
            self.refusals.labels(str(exc.status), self._codes(exc.code)).inc()

    async def on_refusal(self, request: Request, exc: AppError) -> None:
        """The `app.state.on_refusal` hook: one denied event for a refused request."""
        event, key, actor = self.describe(request, exc)
        await run_in_threadpool(self.record, event, caller_key=key, actor=actor)

    def describe(self, request: Request, exc: AppError) -> tuple[AuditEventIn, str, AuditActor]:
        """The refusal's event, the key its caller is counted under, and the caller."""
        principal = getattr(request.state, "principal", None)
        detail: dict[str, Any] = {
            "route": route_template(request.scope) or "(no route)",
            "method": request.method,
            "status": exc.status,
            "code": exc.code,
            "reason": exc.reason,
        }
        claims = exc.verified_claims if isinstance(exc, Unauthorized) else None
        if isinstance(principal, Principal):
            actor = AuditActor(
                sub=principal.sub, org=principal.org, client=principal.client, issuer=principal.issuer
            )
        elif claims:
            actor = _verified_actor(claims)
        else:
            actor = AuditActor(sub="anonymous")
        if actor.sub != "anonymous" or actor.issuer:
            key = f"caller:{actor.issuer}\x00{actor.sub}"
        else:
            # Unverified: whatever token came is only a digest, and the caller is its address.
            address = request.client.host if request.client else "unknown"
            key = f"address:{address}"
            detail["address"] = digest(address)
            token = _bearer_token(request)
            if token is not None:
                detail["token"] = digest(token)
        event = build_event(
            source=self.source,
            action=_ACTIONS.get(request.method, "execute"),
            type=REFUSED,
            subtype=exc.code[:100],
            outcome="denied",
            principal=None,
            detail=detail,
        ).model_copy(update={"actor": actor})
        return event, key, actor
