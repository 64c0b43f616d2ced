"""The procrastinate runner: durable validation jobs in PostgreSQL that any worker node may run.

A submission's backing data is stored envelope-encrypted in the database (`envelope.BackingStore`)
and a procrastinate job naming only the invoice's seq is deferred to the `validation` queue. A
worker (`cef worker`, or the API process itself) runs it: claims the invoice in submission order
(`jobs.claim`; an invoice whose commissioner has an earlier one unfinished is retried a moment
later), restores the backing data into a spool under its own process key, validates, and deletes
the stored data when the job ends. Workers send heartbeats; every node looks for jobs whose worker
went silent and retries them, and a retried job starts its invoice again from nothing
(`jobs.restart_invoice`). See docs/queue.md."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from procrastinate import App, JobContext, PsycopgConnector, RetryDecision
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

from cef_api.config import Settings
from cef_api.invoices import jobs, repository
from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.invoices.workers import ValidationPool
from cef_api.queue.base import ValidationQueue
from cef_api.queue.envelope import BackingStore, BackingUnavailable, KeyRing, load_key_ring
from cef_api.spool import EncryptedSpool, SpoolCipher
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import BackingSurvey

log = structlog.get_logger(__name__)

QUEUE_NAME = "validation"
TASK_NAME = "cef_api.validate_invoice"
# How often an idle worker looks for jobs whose retry time has come (new jobs arrive by NOTIFY).
POLL_SECONDS = 1.0
# A background invoice with stored data but no job is deferred again only after this long (the
# submitting request defers it itself right after storing); one with no stored data is failed.
ORPHAN_GRACE = timedelta(seconds=60)
LOST_REASON = (
    "the service stopped while it was storing this invoice's backing data for validation; nothing "
    "of it was kept: submit the invoice again"
)
# Jobs that take over an invoice already under way (a stalled job's successor, a job of a
# validating invoice deferred again by recovery) come before new ones: procrastinate fetches by
# priority, then id, so a successor, whose id is newer than its chain's waiting jobs, would otherwise
# queue behind jobs that can only wait for it.
RESUME_PRIORITY = 1
GAVE_UP_REASON = "its validation was interrupted too many times; nothing of it was kept: submit it again"


class NotYourTurn(Exception):
    """An earlier invoice of the same commissioner is not finished yet: try again shortly."""


class ValidationRetry(BaseRetryStrategy):
    """Waiting for an earlier invoice is retried after `order_wait` seconds, forever (it ends when
    that invoice ends); anything else the job could not handle (the database away while claiming)
    with a growing wait of at most a minute."""

    def __init__(self, order_wait: int) -> None:
        self.order_wait = order_wait

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, NotYourTurn):
            return RetryDecision(retry_in={"seconds": self.order_wait})
        return RetryDecision(retry_in={"seconds": min(60, 2 ** min(job.attempts, 6))})


def conninfo(database_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (any driver named)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError("the procrastinate runner needs CEF_API_DATABASE_URL to be a PostgreSQL URL")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(settings: Settings, runner: Callable[[int, int], None] | None, *, pool_size: int = 4) -> App:
    """A procrastinate app with the validation task; `runner(seq, job_id)` runs a job (None: an app
    that only defers)."""
    app = App(
        connector=PsycopgConnector(
            conninfo=conninfo(settings.effective_database_url), min_size=1, max_size=pool_size
        )
    )

    def validate_invoice(context: JobContext, seq: int) -> None:
        if runner is None:
            raise RuntimeError("this procrastinate app only defers jobs")
        assert context.job.id is not None
        runner(seq, context.job.id)

    app.task(
        name=TASK_NAME,
        queue=QUEUE_NAME,
        pass_context=True,
        retry=ValidationRetry(settings.queue_order_retry_seconds),
    )(validate_invoice)
    return app


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ProcrastinateQueue(ValidationQueue):
    """Durable jobs on PostgreSQL through procrastinate; `run_worker` runs a worker on this node."""

    kind = "procrastinate"

    def __init__(
        self,
        engine: Engine,
        tokeniser: TokeniserClient,
        settings: Settings,
        *,
        pool: ValidationPool | None = None,
        run_worker: bool = True,
        keys: KeyRing | None = None,
        worker_name: str = "cef-api",
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(
                "the procrastinate runner needs PostgreSQL (CEF_API_DATABASE_URL); on SQLite the "
                "in-process runner validates in the background"
            )
        self.engine = engine
        self.tokeniser = tokeniser
        self.settings = settings
        self.pool = pool
        self.run_worker = run_worker
        self.worker_name = worker_name
        self.store = BackingStore(engine, keys or load_key_ring(settings))
        self.cipher = SpoolCipher()
        self._defer_app = make_app(settings, None, pool_size=2)
        self._defer_lock = threading.Lock()
        self._defer_open = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._started = threading.Event()

    # --- submitting ---------------------------------------------------------------------------------

    def enqueue(self, invoice: Invoice, spool: EncryptedSpool, survey: BackingSurvey) -> bool:
        assert invoice.seq is not None
        self.store.store(invoice.seq, spool)
        try:
            self.defer(invoice.seq)
        except Exception:
            self.store.delete(invoice.seq)
            raise
        log.info("validation_queued", invoice_seq=invoice.seq, runner=self.kind)
        return False

    def defer(self, seq: int, *, priority: int = 0) -> int | None:
        """Defers the invoice's job (one waiting job per invoice: a second is not added)."""
        with self._defer_lock:
            if not self._defer_open:
                self._defer_app.open()
                self._defer_open = True
        try:
            return self._defer_app.configure_task(
                TASK_NAME, queueing_lock=f"invoice:{seq}", priority=priority
            ).defer(seq=seq)
        except AlreadyEnqueued:
            return None

    # --- running a job ------------------------------------------------------------------------------

    def _other_running(self, seq: int, job_id: int) -> bool:
        """Whether another job of this invoice is running (a job deferred twice, never a retry)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT 1 FROM procrastinate_jobs WHERE task_name = :task AND status = 'doing'"
                    " AND (args->>'seq')::int = :seq AND id <> :id LIMIT 1"
                ),
                {"task": TASK_NAME, "seq": seq, "id": job_id},
            ).first()
        return found is not None

    def _restarts(self, seq: int) -> int:
        """Counts a restart of the invoice's job in its stored row; returns the count."""
        with self.engine.begin() as conn:
            count = conn.execute(
                sa.text(
                    "UPDATE queue_backing SET restarts = restarts + 1 WHERE invoice_seq = :seq"
                    " RETURNING restarts"
                ),
                {"seq": seq},
            ).scalar_one_or_none()
        return int(count) if count is not None else 0

    def run_job(self, seq: int, job_id: int) -> None:
        """One attempt of an invoice's validation job."""
        with Session(self.engine, expire_on_commit=False) as session:
            invoice = repository.by_seq(session, seq)
        if invoice is None or invoice.status not in InvoiceStatus.OPEN:
            self.store.delete(seq)  # finished (or removed) already: nothing to do
            return
        if invoice.status == InvoiceStatus.RECEIVED:
            attempt = jobs.claim(self.engine, invoice)
            if attempt is None:
                raise NotYourTurn()
        else:
            if self._other_running(seq, job_id):
                return  # a duplicate job: the running one finishes the invoice
            restarts = self._restarts(seq)
            if restarts > self.settings.queue_max_restarts:
                jobs.fail_invoice(self.engine, seq, GAVE_UP_REASON)
                self.store.delete(seq)
                return
            attempt = jobs.restart_invoice(self.engine, seq)
            if attempt is None:
                return
        # The pid tells an operator (and the replica test) which process runs the job.
        log.info(
            "validation_job_started",
            invoice_seq=seq,
            job_id=job_id,
            attempt=attempt,
            worker=self.worker_name,
            pid=os.getpid(),
        )
        self._validate(seq, attempt)

    def _validate(self, seq: int, attempt: int) -> None:
        spool: EncryptedSpool | None = None
        try:
            try:
                spool = self.store.restore(seq, self.settings.data_dir / "spool", self.cipher)
            except BackingUnavailable as exc:
                log.error("validation_backing_unavailable", invoice_seq=seq, error=str(exc))
                jobs.fail_invoice(
                    self.engine,
                    seq,
                    f"{exc}; nothing of this invoice was kept: submit it again",
                    attempt=attempt,
                )
                return
            survey = jobs.survey_lines(spool, self.settings.validation_batch_lines)
            jobs.validate_invoice(
                self.engine,
                seq=seq,
                spool=spool,
                survey=survey,
                tokeniser=self.tokeniser,
                settings=self.settings,
                attempt=attempt,
                pool=self.pool,
            )
        except jobs.AttemptSuperseded:
            # This node was thought dead and its job restarted elsewhere: the invoice and its stored
            # data are the new attempt's, so nothing of them is touched.
            log.warning("validation_job_superseded", invoice_seq=seq, attempt=attempt)
            return
        except Exception as exc:  # validate_invoice has failed and audited the invoice already
            log.warning("validation_job_failed", invoice_seq=seq, error=type(exc).__name__)
        finally:
            if spool is not None:
                spool.delete()
        self.store.delete(seq)

    # --- recovery -----------------------------------------------------------------------------------

    def _live_job_seqs(self) -> set[int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT (args->>'seq')::int FROM procrastinate_jobs"
                    " WHERE task_name = :task AND status IN ('todo', 'doing')"
                ),
                {"task": TASK_NAME},
            )
            return {int(s) for (s,) in rows}

    def recover(self) -> int:
        """Invoices left open with nothing that will finish them: a background one whose stored data
        has no job gets one again (or is failed when its data never got stored); a synchronous one
        whose request's process died (its guard lock is free) is failed. Invoices that a live job or
        request is validating are left alone, whichever node runs it."""
        with Session(self.engine, expire_on_commit=False) as session:
            open_invoices = [i for i in repository.open_invoices(session) if i.seq is not None]
        if not open_invoices:
            return 0
        live = self._live_job_seqs()
        stored = set(self.store.stored_seqs())
        now = datetime.now(UTC)
        touched = 0
        for invoice in open_invoices:
            seq = invoice.seq
            assert seq is not None
            old = now - _aware(invoice.submitted_at) > ORPHAN_GRACE
            if not old:
                continue
            if invoice.background:
                if seq in live:
                    continue
                if seq in stored:
                    # Only an invoice under way is its chain's head; a waiting one would only wait.
                    resuming = invoice.status == InvoiceStatus.VALIDATING
                    self.defer(seq, priority=RESUME_PRIORITY if resuming else 0)
                    log.warning("validation_requeued", invoice_seq=seq)
                else:
                    jobs.fail_invoice(self.engine, seq, LOST_REASON)
                touched += 1
            elif jobs.request_abandoned(self.engine, seq):
                jobs.fail_invoice(self.engine, seq, jobs.ABANDONED_REASON)
                touched += 1
        if touched:
            log.warning("interrupted_validations_recovered", count=touched)
        return touched

    def requeue_stalled(self, job_id: int, seq: int) -> bool:
        """Replaces a stalled job by a new job of its invoice, in one transaction: the stalled row is
        deleted (only while it is still `doing`) and a fresh one deferred. A fresh id, not
        procrastinate's `retry_job`, because the old worker may be alive after all (a long pause):
        when it wakes it finishes its job id, which must not be the new attempt's. True when this
        node replaced it (False: another node did, or the job ended meanwhile)."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                sa.text("DELETE FROM procrastinate_jobs WHERE id = :id AND status = 'doing' RETURNING id"),
                {"id": job_id},
            ).first()
            if gone is None:
                return False
            # ON CONFLICT: a waiting job of the invoice already exists (recovery deferred one).
            conn.execute(
                sa.text(
                    "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args)"
                    " VALUES (:queue, :task, :priority, :lock, CAST(:args AS jsonb)) ON CONFLICT DO NOTHING"
                ),
                {
                    "priority": RESUME_PRIORITY,
                    "queue": QUEUE_NAME,
                    "task": TASK_NAME,
                    "lock": f"invoice:{seq}",
                    "args": f'{{"seq": {seq}}}',
                },
            )
        return True

    async def retry_stalled(self, app: App) -> int:
        """Jobs running on a worker that sent no heartbeat for `queue_stalled_seconds` (its node
        died, or froze) go back to the queue as new jobs; any live worker then restarts their
        invoices under a new attempt number, which fences the old worker out if it wakes."""
        stalled = await app.job_manager.get_stalled_jobs(
            queue=QUEUE_NAME,
            task_name=TASK_NAME,
            seconds_since_heartbeat=self.settings.queue_stalled_seconds,
        )
        retried = 0
        for job in stalled:
            assert job.id is not None
            seq = int(str(job.task_kwargs["seq"]))
            if await asyncio.to_thread(self.requeue_stalled, job.id, seq):
                retried += 1
                log.warning("validation_job_stalled_retried", job_id=job.id, invoice_seq=seq)
            else:
                log.info("validation_job_retry_skipped", job_id=job.id, invoice_seq=seq)
        return retried

    async def _recovery_loop(self, app: App) -> None:
        while True:
            try:
                await self.retry_stalled(app)
                await asyncio.to_thread(self.recover)
            except Exception as exc:  # the loop must outlive a database restart
                log.warning("validation_recovery_failed", error=type(exc).__name__)
            await asyncio.sleep(self.settings.queue_recovery_interval_seconds)

    # --- the worker -----------------------------------------------------------------------------------

    async def serve(self, *, install_signal_handlers: bool) -> None:
        """Runs a procrastinate worker for the validation queue until stopped (SIGTERM/SIGINT when
        `install_signal_handlers`, else cancellation); a running job is finished first."""
        concurrency = self.settings.queue_worker_concurrency
        app = make_app(self.settings, self.run_job, pool_size=concurrency + 4)
        async with app.open_async():
            recovery = asyncio.create_task(self._recovery_loop(app), name="validation-recovery")
            try:
                options: dict[str, Any] = {
                    "queues": [QUEUE_NAME],
                    "name": self.worker_name,
                    "concurrency": concurrency,
                    "install_signal_handlers": install_signal_handlers,
                    "update_heartbeat_interval": self.settings.queue_heartbeat_seconds,
                    "stalled_worker_timeout": self.settings.queue_stalled_seconds,
                    "fetch_job_polling_interval": POLL_SECONDS,
                    "delete_jobs": "successful",
                }
                self._started.set()
                await app.run_worker_async(**options)
            finally:
                recovery.cancel()
                await asyncio.gather(recovery, return_exceptions=True)

    def start(self) -> None:
        if not self.run_worker:
            return

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._main = asyncio.current_task()
            await self.serve(install_signal_handlers=False)

        def run() -> None:
            try:
                asyncio.run(main())
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                log.error("validation_worker_stopped", error=type(exc).__name__)

        self._thread = threading.Thread(target=run, name="validation-worker", daemon=True)
        self._thread.start()
        self._started.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None and self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(timeout)
        if self.pool is not None:
            self.pool.close()
        with self._defer_lock:
            if self._defer_open:
                self._defer_app.close()
                self._defer_open = False

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = :queue"
                        " AND status IN ('todo', 'doing')"
                    ),
                    {"queue": QUEUE_NAME},
                ).scalar_one()
            )
