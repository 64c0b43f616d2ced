"""`cef worker`: a worker node that runs validation jobs from the procrastinate queue.

It reads the CEF API's settings (CEF_API_*), needs CEF_API_DATABASE_URL to be PostgreSQL, holds
the queue's key-encryption key (CEF_API_QUEUE_KEY_FILE, or the development key under the data
directory) to open the backing data, and stops cleanly on SIGTERM or Ctrl-C after the job it is
running. It serves Prometheus /metrics on its own port: CEF_API_METRICS_PORT when set, else 9004
(a worker node's port, apart from the API's 9002, so both may run on one host). See docs/queue.md."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cef_cli.common import DataDirOption, fail

if TYPE_CHECKING:
    from cef_api.config import Settings


def worker(
    name: Annotated[
        str | None, typer.Option(help="The worker's name in procrastinate's tables and the logs.")
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Run a validation worker node (procrastinate) until SIGTERM or Ctrl-C.

    Uses the CEF API's settings from the environment (CEF_API_*); the database must be PostgreSQL."""
    from cef_api.config import Settings
    from cef_api.invoices.workers import ValidationPool
    from cef_api.metrics import InvoiceCollector
    from cef_api.queue.envelope import QueueKeyError
    from cef_api.queue.procrastinate_runner import ProcrastinateQueue
    from cef_api.tokeniser_client import TokeniserClient
    from cef_common import db, redact
    from cef_common.auth import ServiceTokens
    from cef_common.logging import configure_logging
    from cef_common.metrics import ServiceMetrics

    settings = Settings(data_dir=data_dir)
    url = settings.effective_database_url
    if db.is_sqlite(url):
        fail(
            "cef worker needs PostgreSQL: set CEF_API_DATABASE_URL to the CEF API's PostgreSQL database "
            "(on SQLite the CEF API validates in the background itself)"
        )
    configure_logging(level=settings.log_level, fmt=settings.log_format, service="cef-worker")
    engine = db.make_engine(url)
    tokens = ServiceTokens.from_settings(settings)
    redact.configure(tokens.signer.key.private_pem.encode())
    tokeniser = TokeniserClient.from_settings(settings, tokens)
    processes = settings.effective_validation_processes
    pool = ValidationPool(settings, processes) if processes else None
    try:
        queue = ProcrastinateQueue(
            engine,
            tokeniser,
            settings,
            pool=pool,
            worker_name=name or f"cef-worker-{socket.gethostname()}-{os.getpid()}",
        )
    except QueueKeyError as exc:
        fail(str(exc))
        return
    metrics = ServiceMetrics("cef-worker")
    # The queue's figures (jobs queued, running, failed; lines validated), read from the database
    # at scrape time, as the API's listener serves them.
    metrics.register(InvoiceCollector(lambda: engine))
    metrics.serve(settings.metrics_host, worker_metrics_port(settings), required=settings.is_production)
    try:
        if pool is not None:
            pool.warm()
        queue.recover()
        asyncio.run(queue.serve(install_signal_handlers=True))
    finally:
        metrics.stop()
        queue.stop()
        tokeniser.close()
        engine.dispose()


def worker_metrics_port(settings: Settings) -> int:
    """The worker's /metrics port: CEF_API_METRICS_PORT when set explicitly (0: off), else 9004 (off
    in the test environment, as every service's default is)."""
    from cef_common.settings import WORKER_METRICS_PORT

    if settings.metrics_port is not None:
        return settings.metrics_port
    return 0 if settings.environment == "test" else WORKER_METRICS_PORT
