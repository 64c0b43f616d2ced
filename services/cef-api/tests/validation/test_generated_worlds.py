"""Replays worlds from the repository's by-design generator (benchmarks/generate_world.py), whose
expected outcomes come from how each line was made, not from this engine."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

from cef_api.validation.csvfile import read_backing_data
from cef_api.validation.engine import summarise
from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.rules.pathway import InMemorySpellIndex
from cef_api.validation.types import InvoiceHeader

from .factories import reference_from_files
from .replay import replay_invoice

BENCHMARKS = Path(__file__).resolve().parents[4] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
generate_world = pytest.importorskip("generate_world")


@pytest.mark.parametrize("seed", [3, 11, 2026])
def test_generated_world_outcomes(seed: int) -> None:
    world = generate_world.generate(seed=seed, patients=200, invoices=4, lines_per_invoice=120)
    reference = reference_from_files(world.reference_files())
    duplicates, spells = InMemoryDuplicateIndex(), InMemorySpellIndex()
    pathway_reasons = 0
    for invoice in world.invoices:
        h = invoice.header
        header = InvoiceHeader(
            h["invoice_number"],
            h["provider_code"],
            h["commissioner_code"],
            date.fromisoformat(h["invoice_date"]),
            date.fromisoformat(h["period_start"]),
            date.fromisoformat(h["period_end"]),
        )
        outcomes = replay_invoice(
            reference,
            list(read_backing_data([invoice.backing[:1000], invoice.backing[1000:]])),
            invoice=header,
            duplicates=duplicates,
            spells=spells,
        )
        got = [
            (
                o.line_ref or "",
                o.outcome.value,
                tuple(r.value for r in o.reasons),
                o.responsible_commissioner or "",
                "" if o.expected_amount is None else f"{o.expected_amount:.2f}",
            )
            for o in outcomes
        ]
        want = [
            (e.line_ref, e.outcome, tuple(e.reasons), e.responsible_commissioner, e.expected_amount)
            for e in invoice.expected
        ]
        assert got == want
        pathway_reasons += sum(
            reason in ("OVERLAPPING_SPELL", "ATTENDANCE_DURING_SPELL")
            for _, _, reasons, _, _ in want
            for reason in reasons
        )
        summary = summarise(outcomes)
        expected_summary = generate_world.summary_of(invoice)
        assert f"{summary.claimed_amount:.2f}" == expected_summary["claimed_amount"]
        assert f"{summary.validated_amount:.2f}" == expected_summary["validated_amount"]
        assert (summary.lines, summary.valid, summary.query, summary.rejected) == tuple(
            int(expected_summary[k]) for k in ("lines", "valid", "query", "rejected")
        )
    # The world exercises checks 14 and 15, so the comparison above covers them.
    assert pathway_reasons > 0
