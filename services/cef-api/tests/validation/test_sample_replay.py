"""Replays whole worlds in memory — the shared sample and the repository's demo world — and compares
every line and invoice with their expected files."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from cef_api.reference.parsers import FILENAMES
from cef_api.validation.csvfile import read_backing_data
from cef_api.validation.engine import summarise
from cef_api.validation.memory import InMemoryDuplicateIndex, InMemoryReferenceData
from cef_api.validation.types import InvoiceHeader
from cef_common.testing import SHARED_DIR

from .factories import reference_from_files, run

SAMPLE = SHARED_DIR / "data/sample"
EPRACCUR = SHARED_DIR / "data/reference/epraccur.csv"
DEMO = Path(__file__).resolve().parents[4] / "demo"

WORLDS = [
    pytest.param(
        SAMPLE,
        EPRACCUR,
        id="shared-sample",
        marks=pytest.mark.skipif(
            not (SAMPLE.is_dir() and EPRACCUR.is_file()),
            reason="the shared sample world is not on this machine",
        ),
    ),
    # The demo world `cef up` loads: its expected outcomes are what users are shown.
    pytest.param(DEMO, DEMO / "reference" / "epraccur.csv", id="demo"),
]


def _reference(world: Path, epraccur: Path) -> InMemoryReferenceData:
    files = {"gp-practices": epraccur.read_bytes()}
    for dataset, filename in FILENAMES.items():
        if dataset != "gp-practices":
            files[dataset] = (world / "reference" / filename).read_bytes()
    return reference_from_files(files)


def _header(path: Path) -> InvoiceHeader:
    body = json.loads(path.read_text())
    return InvoiceHeader(
        invoice_number=body["invoice_number"],
        provider_code=body["provider_code"],
        commissioner_code=body["commissioner_code"],
        invoice_date=date.fromisoformat(body["invoice_date"]),
        period_start=date.fromisoformat(body["period_start"]),
        period_end=date.fromisoformat(body["period_end"]),
    )


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


@pytest.mark.parametrize(("world", "epraccur"), WORLDS)
def test_world_reproduces_expected_outcomes_exactly(world: Path, epraccur: Path) -> None:
    reference = _reference(world, epraccur)
    duplicates = InMemoryDuplicateIndex()
    got_lines: list[dict[str, str]] = []
    got_summaries: list[dict[str, str]] = []
    order = (world / "invoices" / "ORDER").read_text().split()
    for number, name in enumerate(order):
        header = _header(world / "invoices" / f"{name}.json")
        # Odd chunk sizes: the reader must not care where the bytes are cut.
        data = (world / "invoices" / f"{name}.csv").read_bytes()
        raw_lines = list(read_backing_data(_chunks(data, 7 + 97 * number)))
        outcomes = run(reference, raw_lines, invoice=header, duplicates=duplicates)
        for outcome in outcomes:
            got_lines.append(
                {
                    "invoice_number": header.invoice_number,
                    "line_ref": outcome.line_ref or "",
                    "outcome": outcome.outcome.value,
                    "reasons": ";".join(reason.value for reason in outcome.reasons),
                    "responsible_commissioner": outcome.responsible_commissioner or "",
                    "expected_amount": _money(outcome.expected_amount),
                }
            )
        summary = summarise(outcomes)
        got_summaries.append(
            {
                "invoice_number": header.invoice_number,
                "lines": str(summary.lines),
                "valid": str(summary.valid),
                "query": str(summary.query),
                "rejected": str(summary.rejected),
                "claimed_amount": _money(summary.claimed_amount),
                "validated_amount": _money(summary.validated_amount),
            }
        )

    with (world / "expected" / "line_outcomes.csv").open(newline="") as f:
        expected_lines = list(csv.DictReader(f))
    with (world / "expected" / "invoice_summaries.csv").open(newline="") as f:
        expected_summaries = list(csv.DictReader(f))
    assert len(got_lines) == len(expected_lines)
    mismatches = [(got, want) for got, want in zip(got_lines, expected_lines, strict=True) if got != want]
    assert mismatches == []
    assert got_summaries == expected_summaries
