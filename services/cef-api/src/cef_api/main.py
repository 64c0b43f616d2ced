"""The cef-api service: app factory, and the start-up that seeds reference data, recovers
interrupted validations and runs the background validation worker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI
from sqlalchemy import Engine

from cef_api.config import Settings
from cef_api.invoices import jobs
from cef_api.invoices import service as invoice_service
from cef_api.invoices.router import router as invoices_router
from cef_api.invoices.workers import ValidationPool
from cef_api.metrics import register_api_metrics
from cef_api.queue import ValidationQueue, create_queue, recover_on_start, runner_kind
from cef_api.reasons.router import router as reasons_router
from cef_api.reference import fingerprints
from cef_api.reference.router import router as reference_router
from cef_api.reports.router import router as reports_router
from cef_api.seed import seed_reference
from cef_api.spool import SpoolCipher
from cef_api.tokeniser_client import Detokeniser, TokeniserClient
from cef_api.workflow.router import router as workflow_router
from cef_common.app import ServiceSpec, create_service_app

MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger(__name__)


class RetentionTimer:
    """Applies `retention_days` on a timer inside the service (as `cef purge` does by hand)."""

    def __init__(self, engine: Engine, days: int, interval: float) -> None:
        self.engine, self.days, self.interval = engine, days, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                invoice_service.purge(
                    self.engine, older_than_days=self.days, principal=jobs.SERVICE_PRINCIPAL
                )
            except Exception as exc:  # the timer must outlive a failed run
                log.warning("retention_purge_failed", error=type(exc).__name__)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractContextManager[None]]:
    @contextmanager
    def lifespan(app: FastAPI) -> Iterator[None]:
        engine: Engine = app.state.engine
        tokeniser = TokeniserClient.from_settings(settings, app.state.service_tokens)
        app.state.tokeniser = tokeniser
        detokeniser = Detokeniser.from_settings(settings, app.state.service_tokens)
        app.state.detokeniser = detokeniser
        app.state.fingerprint_key = fingerprints.key_from_settings(settings)
        worker: ValidationQueue | None = None
        if settings.worker_enabled:
            # This node runs jobs itself with the in-process runner always, with procrastinate
            # unless QUEUE_EMBEDDED_WORKER is off (then only `cef worker` nodes do).
            runs_jobs = runner_kind(settings) == "in-process" or settings.queue_embedded_worker
            processes = settings.effective_validation_processes if runs_jobs else 0
            pool = ValidationPool(settings, processes) if processes else None
            if pool is not None:
                pool.warm()
            worker = create_queue(engine, tokeniser, settings, pool=pool, run_worker=runs_jobs)
        recover_on_start(engine, settings, worker)
        if settings.seed_reference_dir is not None:
            seed_reference(
                engine,
                tokeniser,
                settings.seed_reference_dir,
                settings.seed_tokeniser_wait_seconds,
                fingerprint_key=app.state.fingerprint_key,
            )
        if worker is not None:
            worker.start()
        app.state.validation_worker = worker
        timer: RetentionTimer | None = None
        if settings.retention_days is not None and settings.retention_interval_seconds > 0:
            timer = RetentionTimer(engine, settings.retention_days, settings.retention_interval_seconds)
            timer.start()
        try:
            yield
        finally:
            if timer is not None:
                timer.stop()
            if worker is not None:
                worker.stop()
            tokeniser.close()
            detokeniser.close()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF API",
            description="Reference data, invoice submission, line validation and the decision workflow.",
            migrations=MIGRATIONS,
            routers=[reference_router, invoices_router, workflow_router, reasons_router, reports_router],
            audit_url=settings.audit_url,
            lifespan=_lifespan(settings),
            body_limits=[
                ("/v1/invoices", settings.max_invoice_bytes),
                ("/v1/reference", settings.max_reference_bytes),
            ],
        )
    )
    register_api_metrics(app)
    app.state.spool_cipher = SpoolCipher()
    app.state.validation_worker = None
    return app
