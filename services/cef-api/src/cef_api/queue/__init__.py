"""Background validation behind one interface (`ValidationQueue`) with two runners: in-process
(SQLite, `make up`) and procrastinate (PostgreSQL, durable, any worker node). See docs/queue.md."""

from __future__ import annotations

from sqlalchemy import Engine

from cef_api.config import Settings
from cef_api.invoices.workers import ValidationPool
from cef_api.queue.base import ValidationQueue
from cef_api.queue.inprocess import InProcessQueue, recover_in_process
from cef_api.tokeniser_client import TokeniserClient
from cef_common import db

__all__ = ["InProcessQueue", "ValidationQueue", "create_queue", "recover_on_start", "runner_kind"]


def runner_kind(settings: Settings) -> str:
    """ "procrastinate" or "in-process": QUEUE_RUNNER, where "auto" follows the database."""
    if settings.queue_runner != "auto":
        return settings.queue_runner
    return "in-process" if db.is_sqlite(settings.effective_database_url) else "procrastinate"


def create_queue(
    engine: Engine,
    tokeniser: TokeniserClient,
    settings: Settings,
    *,
    pool: ValidationPool | None = None,
    run_worker: bool = True,
    worker_name: str = "cef-api",
) -> ValidationQueue:
    """The runner the settings choose; `run_worker` says whether this node runs jobs itself (the
    in-process runner always does)."""
    if runner_kind(settings) == "procrastinate":
        from cef_api.queue.procrastinate_runner import ProcrastinateQueue

        return ProcrastinateQueue(
            engine, tokeniser, settings, pool=pool, run_worker=run_worker, worker_name=worker_name
        )
    return InProcessQueue(engine, tokeniser, settings, pool=pool)


def recover_on_start(engine: Engine, settings: Settings, queue: ValidationQueue | None) -> int:
    """Invoices an earlier process left open: the runner decides (a shared queue keeps what live
    nodes are doing); with no queue on this node, the in-process rule unless the runner is durable."""
    if queue is not None:
        return queue.recover()
    if runner_kind(settings) == "procrastinate":
        return 0  # the worker nodes recover their queue
    return recover_in_process(engine, settings)
