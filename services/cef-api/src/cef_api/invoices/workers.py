"""Worker processes that assess batches of one invoice side by side, on the cores one Python
process cannot use.

A batch needs no other batch but for the checks that look back (duplicates, then the pathway
checks), which the job settles afterwards in line order (`batches.settle_batch`), so batches are
handed out in order and their results taken back in order. Each worker is a spawned process of
this service (never a fork of its threads) with its own database engine, tokeniser client and
reference snapshot, kept while the versions it holds stay in force. Backing data reaches a worker
only through the pipe between the two processes, as the text of whole records; it is never
written anywhere."""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.config import Settings
from cef_api.invoices.batches import AssessedBatch, assess_batch, tokenise_batch
from cef_api.reference import repository as reference_repository
from cef_api.reference.service import ReferenceSnapshot
from cef_api.spool import EncryptedSpool
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import BackingBatch, BackingSurvey, BatchLayout, split_backing_batches
from cef_api.validation.prepared import PREPARED_COLUMNS
from cef_api.validation.types import InvoiceHeader
from cef_common import db
from cef_common.auth import ServiceTokens
from cef_common.errors import AppError
from cef_common.logging import configure_logging

log = structlog.get_logger(__name__)


class BatchFailed(Exception):
    """A worker could not assess a batch; `detail` says why, as the service error it met would.

    Raised in place of that error because service errors do not survive the pickling between
    processes (their constructors take other arguments than they keep)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class BatchTask:
    seq: int
    header: InvoiceHeader
    versions: dict[str, int]  # the reference versions the invoice pinned
    layout: BatchLayout
    batch: BackingBatch


class _Worker:
    """What one worker process keeps between tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine = db.make_engine(settings.effective_database_url)
        self.tokeniser = TokeniserClient.from_settings(settings, ServiceTokens.from_settings(settings))
        self._snapshot_of: tuple[tuple[str, int], ...] | None = None
        self._snapshot: ReferenceSnapshot | None = None

    def snapshot(self, versions: dict[str, int]) -> ReferenceSnapshot:
        # Versions are never changed once written, so a snapshot of the same numbers stays true.
        key = tuple(sorted(versions.items()))
        if self._snapshot is None or self._snapshot_of != key:
            self._snapshot = None  # the old one's memory goes before the new one is read
            with Session(self.engine) as session:
                named = reference_repository.versions_named(session, versions)
                if set(named) != set(versions):
                    raise RuntimeError("a reference version the invoice pinned is no longer stored")
                self._snapshot = ReferenceSnapshot.load(
                    session, named, memory_rows=self.settings.reference_memory_rows
                )
            self._snapshot_of = key
        return self._snapshot

    def assess(self, task: BatchTask) -> AssessedBatch:
        snapshot = self.snapshot(task.versions)
        tokenised = tokenise_batch(
            task.batch,
            task.layout,
            tokeniser=self.tokeniser,
            key_version=snapshot.key_version,
            dob_key_version=snapshot.dob_key_version,
        )
        with Session(self.engine) as session:
            reference = snapshot.for_patients(
                session, sorted({t for t in tokenised.line_tokens if t is not None})
            )
        return assess_batch(tokenised, seq=task.seq, header=task.header, reference=reference)


_worker: _Worker | None = None


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _start_worker(settings: Settings) -> None:
    global _worker
    # Ctrl-C reaches the whole process group: the service stops its workers itself, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A service that is killed cannot stop its workers: each ends as soon as the service is gone,
    # rather than lingering with what it holds in memory.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="parent-watch", daemon=True).start()
    configure_logging(level=settings.log_level, fmt=settings.log_format, service=settings.service_name)
    _worker = _Worker(settings)


def _warm(versions: dict[str, int] | None) -> None:
    assert _worker is not None, "the worker process was not started by ValidationPool"
    if versions is None:
        return
    try:
        _worker.snapshot(versions)
    except Exception as exc:  # the first batch will meet the same problem and fail its invoice
        log.warning("validation_worker_warm_up_failed", error=type(exc).__name__)


def _assess(task: BatchTask) -> AssessedBatch:
    assert _worker is not None, "the worker process was not started by ValidationPool"
    # A batch makes millions of short-lived objects that reference counting frees; the cyclic
    # collector would walk them again and again (about 12% of the batch's CPU). It runs once after
    # each batch over what the batch made, which frees the few cycles it left (the HTTP client's,
    # an exception's): without that a worker held 70 MiB more.
    gc.disable()
    try:
        return _worker.assess(task)
    except AppError as exc:
        raise BatchFailed(exc.detail) from None
    except Exception as exc:
        # Only the kind of failure: a message could quote the data being read.
        log.warning("validation_worker_batch_failed", invoice_seq=task.seq, error=type(exc).__name__)
        raise BatchFailed(f"a validation worker process failed ({type(exc).__name__})") from None
    finally:
        gc.enable()
        gc.collect(0)


class ValidationPool:
    """`processes` worker processes, started on first use and kept for the service's life; a pool
    broken by a dead worker is replaced on the next invoice (the invoice it was serving fails)."""

    def __init__(self, settings: Settings, processes: int) -> None:
        if processes < 1:
            raise ValueError("a ValidationPool needs at least one process")
        self.settings = settings
        self.processes = processes
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _executor_locked(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.settings,),
            )
        return self._executor

    def _discard_locked(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def warm(self, versions: dict[str, int] | None = None) -> None:
        """Starts the workers, and has them read the reference snapshot of `versions` when given,
        without waiting (a process takes a second or two to import the service, and as long again
        to read a large trace), so that they are ready when the first batch is: called when the
        service starts, and when a submission that will be validated in the background arrives,
        before its structural pass."""
        with self._lock:
            try:
                executor = self._executor_locked()
                for _ in range(self.processes):
                    executor.submit(_warm, versions)
            except BrokenProcessPool:
                self._discard_locked()

    def _submit(self, task: BatchTask) -> Future[AssessedBatch]:
        with self._lock:
            for _ in range(2):
                try:
                    return self._executor_locked().submit(_assess, task)
                except BrokenProcessPool:
                    self._discard_locked()
            raise BatchFailed("the validation worker processes could not be started")

    def assessed_batches(
        self,
        spool: EncryptedSpool,
        survey: BackingSurvey,
        *,
        seq: int,
        header: InvoiceHeader,
        versions: dict[str, int],
    ) -> Iterator[AssessedBatch]:
        """The invoice's batches assessed by the workers, in order; one more batch in flight than
        there are workers, so none waits while this process settles and stores."""
        layout, batches = split_backing_batches(spool.chunks(), survey, PREPARED_COLUMNS)
        in_flight: deque[Future[AssessedBatch]] = deque()
        try:
            for batch in batches:
                in_flight.append(self._submit(BatchTask(seq, header, versions, layout, batch)))
                if len(in_flight) > self.processes:
                    yield self._result(in_flight.popleft())
            while in_flight:
                yield self._result(in_flight.popleft())
        finally:
            for future in in_flight:
                future.cancel()

    def _result(self, future: Future[AssessedBatch]) -> AssessedBatch:
        try:
            return future.result()
        except BrokenProcessPool:
            with self._lock:
                self._discard_locked()
            raise BatchFailed("a validation worker process ended unexpectedly") from None

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
