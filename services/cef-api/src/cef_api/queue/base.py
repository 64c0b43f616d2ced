"""The interface every runner of background validations offers (docs/queue.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from cef_api.invoices.models import Invoice
from cef_api.invoices.workers import ValidationPool
from cef_api.spool import EncryptedSpool
from cef_api.validation.csvfile import BackingSurvey


class ValidationQueue(ABC):
    """Takes invoices to validate in the background, in submission order per commissioner.

    `enqueue` is called with an invoice already stored `received` (and marked `background`), its
    backing data in a spool that passed the structural pass (`survey`)."""

    #: Worker processes that assess batches on this node (None: in the validating thread).
    pool: ValidationPool | None = None
    #: Short name for logs and docs ("in-process", "procrastinate").
    kind: str = ""

    @abstractmethod
    def enqueue(self, invoice: Invoice, spool: EncryptedSpool, survey: BackingSurvey) -> bool:
        """Queues the invoice's validation; True when the queue took the spool over (it deletes it),
        False when it keeps its own copy and the caller deletes the spool as usual."""

    @abstractmethod
    def start(self) -> None:
        """Starts whatever runs jobs on this node (if anything does)."""

    @abstractmethod
    def stop(self) -> None:
        """Stops running jobs on this node; queued work stays queued where the runner is durable."""

    @abstractmethod
    def recover(self) -> int:
        """On start: deals with invoices an earlier process left open; returns how many it touched."""

    @abstractmethod
    def pending(self) -> int:
        """Jobs queued and not yet finished (all nodes, for a shared queue)."""
