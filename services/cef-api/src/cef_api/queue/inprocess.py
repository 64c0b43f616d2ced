"""The in-process runner: a thread of the service with an in-memory job list (SQLite, `make up`).

Its backing data stays in the process's encrypted spool, under a key that dies with the process,
so a restart cannot resume a job: `recover` fails every invoice left open, saying to submit again."""

from __future__ import annotations

from sqlalchemy import Engine

from cef_api.config import Settings
from cef_api.invoices import jobs
from cef_api.invoices.models import Invoice
from cef_api.invoices.workers import ValidationPool
from cef_api.queue.base import ValidationQueue
from cef_api.spool import EncryptedSpool, clear_spool_directory
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import BackingSurvey


class InProcessQueue(ValidationQueue):
    """`jobs.ValidationWorker` behind the `ValidationQueue` interface."""

    kind = "in-process"

    def __init__(
        self,
        engine: Engine,
        tokeniser: TokeniserClient,
        settings: Settings,
        *,
        pool: ValidationPool | None = None,
        poll: float = 0.2,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.pool = pool
        self.worker = jobs.ValidationWorker(engine, tokeniser, settings, pool=pool, poll=poll)

    def enqueue(self, invoice: Invoice, spool: EncryptedSpool, survey: BackingSurvey) -> bool:
        self.worker.enqueue(invoice, spool, survey)
        return True

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def recover(self) -> int:
        return recover_in_process(self.engine, self.settings)

    def pending(self) -> int:
        return self.worker.pending()

    def run_once(self) -> bool:
        """Validates the first claimable queued invoice (tests drive the runner with it)."""
        return self.worker.run_once()


def recover_in_process(engine: Engine, settings: Settings) -> int:
    """Spools of an earlier process are unreadable now: removed, and their invoices failed."""
    clear_spool_directory(settings.data_dir / "spool")
    return jobs.recover_interrupted(engine)
