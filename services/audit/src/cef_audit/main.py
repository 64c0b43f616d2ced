"""The audit service: app factory, and the lifespan that owns the sequencer and checkpoint timer."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI

from cef_audit.access import refusal_sink
from cef_audit.config import Settings
from cef_audit.events.entities import router as entities_router
from cef_audit.events.reidentifications import router as reidentifications_router
from cef_audit.events.router import router as events_router
from cef_audit.events.summary import router as summary_router
from cef_audit.heap import keep_freed_heap
from cef_audit.integrity.router import router as integrity_router
from cef_audit.log.sequencer import AuditLog
from cef_audit.metrics import AuditChainCollector
from cef_common.app import ServiceSpec, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger(__name__)


def _checkpoint_now(audit_log: AuditLog) -> None:
    try:
        audit_log.checkpoint()
    except Exception as exc:  # the timer must outlive a failed attempt; the next one retries
        log.warning("audit_checkpoint_failed", error=type(exc).__name__)


@contextmanager
def _lifespan(app: FastAPI) -> Iterator[None]:
    settings: Settings = app.state.settings
    audit_log = AuditLog(
        app.state.engine,
        signing_key=app.state.service_tokens.signer.key,
        checkpoint_every=settings.checkpoint_every_events,
    )
    app.state.audit_log = audit_log
    stop = threading.Event()
    timer: threading.Thread | None = None
    if settings.checkpoint_interval_seconds > 0:

        def _tick() -> None:
            while not stop.wait(settings.checkpoint_interval_seconds):
                _checkpoint_now(audit_log)

        timer = threading.Thread(target=_tick, name="audit-checkpoints", daemon=True)
        timer.start()
    # Each batch frees its rows; the next one reuses that memory instead of faulting it in again.
    keep_freed_heap()
    frozen = settings.effective_gc_freeze
    if frozen:
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        if frozen:
            gc.unfreeze()
        stop.set()
        if timer is not None:
            timer.join(timeout=5)
        # Whatever arrived since the last checkpoint is covered before the service goes away.
        _checkpoint_now(audit_log)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF audit",
            description="Append-only, tamper-evident log of every access to patient data.",
            migrations=MIGRATIONS,
            routers=[
                events_router,
                reidentifications_router,
                entities_router,
                summary_router,
                integrity_router,
            ],
            audit_url=None,
            lifespan=_lifespan,
            body_limits=[("/v1/events", settings.max_events_body_bytes)],
            refusal_sink=refusal_sink,
        )
    )
    app.state.metrics.register(AuditChainCollector(lambda: getattr(app.state, "engine", None)))
    return app
