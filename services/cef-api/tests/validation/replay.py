"""Replays an invoice's lines in memory in submission order, as the service decides them: every
check, the ones that look back at earlier lines (duplicates, the pathway checks 14 and 15) included.
The indexes are the caller's, one for the whole replay, so earlier invoices count."""

from __future__ import annotations

from collections.abc import Iterable

from cef_api.validation.csvfile import RawLine
from cef_api.validation.memory import InMemoryDuplicateIndex, InMemoryReferenceData
from cef_api.validation.rules.pathway import InMemorySpellIndex
from cef_api.validation.types import InvoiceHeader, LineOutcome

from .factories import run


def replay_invoice(
    reference: InMemoryReferenceData,
    lines: Iterable[RawLine],
    *,
    invoice: InvoiceHeader,
    duplicates: InMemoryDuplicateIndex,
    spells: InMemorySpellIndex | None,
) -> list[LineOutcome]:
    """Prepare and validate each line in order, tokenising with fake_tokenise. `spells` None: the
    pathway checks do not run (the v1 rules' answers)."""
    return run(reference, list(lines), invoice=invoice, duplicates=duplicates, spells=spells)
