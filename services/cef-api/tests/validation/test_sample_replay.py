"""Replays whole worlds in memory — the shared samples and the repository's demo world — in
submission order, and compares every line and invoice with their expected files."""

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
from cef_api.validation.rules.pathway import InMemorySpellIndex
from cef_api.validation.types import InvoiceHeader, Reason
from cef_common.testing import SHARED_DIR

from .factories import reference_from_files
from .replay import replay_invoice

SAMPLE = SHARED_DIR / "data/sample"
SAMPLE_V2 = SHARED_DIR / "data/sample-v2"
EPRACCUR = SHARED_DIR / "data/reference/epraccur.csv"
DEMO = Path(__file__).resolve().parents[4] / "demo"
PATHWAY_REASONS = frozenset({Reason.OVERLAPPING_SPELL.value, Reason.ATTENDANCE_DURING_SPELL.value})


def _shared(world: Path, world_id: str) -> object:
    return pytest.param(
        world,
        EPRACCUR,
        id=world_id,
        marks=pytest.mark.skipif(
            not (world.is_dir() and EPRACCUR.is_file()),
            reason="the shared sample world is not on this machine",
        ),
    )


# Worlds whose expected files hold the answers of every rule, v1 and v2.
WORLDS = [
    _shared(SAMPLE_V2, "shared-sample-v2"),
    # The demo world `cef up` loads: its expected outcomes are what users are shown.
    pytest.param(DEMO, DEMO / "reference" / "epraccur.csv", id="demo"),
]
# `sample/` holds the answers of the v1 rules only.
V1_WORLDS = [_shared(SAMPLE, "shared-sample")]


def _reference(world: Path, epraccur: Path) -> InMemoryReferenceData:
    files = {"gp-practices": epraccur.read_bytes()}
    for dataset, filename in FILENAMES.items():
        # The v2 datasets are optional: a world without their files validates as v1 did.
        if dataset != "gp-practices" and (world / "reference" / filename).is_file():
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


def _replay(
    world: Path, epraccur: Path, *, pathway: bool
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Every invoice of `invoices/ORDER` through validate_line, line by line in submission order,
    with one duplicate index (and, with `pathway`, one spell index) for the whole replay: the
    lines and summaries as the expected files write them."""
    reference = _reference(world, epraccur)
    duplicates = InMemoryDuplicateIndex()
    spells = InMemorySpellIndex() if pathway else None
    got_lines: list[dict[str, str]] = []
    got_summaries: list[dict[str, str]] = []
    order = (world / "invoices" / "ORDER").read_text().split()
    for number, name in enumerate(order):
        header = _header(world / "invoices" / f"{name}.json")
        # Odd chunk sizes: the reader must not care where the bytes are cut.
        data = (world / "invoices" / f"{name}.csv").read_bytes()
        lines = read_backing_data(_chunks(data, 7 + 97 * number))
        outcomes = replay_invoice(reference, lines, invoice=header, duplicates=duplicates, spells=spells)
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
    return got_lines, got_summaries


def _expected(world: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    with (world / "expected" / "line_outcomes.csv").open(newline="") as f:
        expected_lines = list(csv.DictReader(f))
    with (world / "expected" / "invoice_summaries.csv").open(newline="") as f:
        expected_summaries = list(csv.DictReader(f))
    return expected_lines, expected_summaries


@pytest.mark.parametrize(("world", "epraccur"), WORLDS)
def test_world_reproduces_expected_outcomes_exactly(world: Path, epraccur: Path) -> None:
    got_lines, got_summaries = _replay(world, epraccur, pathway=True)
    expected_lines, expected_summaries = _expected(world)
    assert len(got_lines) == len(expected_lines)
    mismatches = [(got, want) for got, want in zip(got_lines, expected_lines, strict=True) if got != want]
    assert mismatches == []
    assert got_summaries == expected_summaries


@pytest.mark.parametrize(("world", "epraccur"), V1_WORLDS)
def test_v1_world_reproduces_its_v1_answers_without_the_pathway_checks(world: Path, epraccur: Path) -> None:
    """A v1 world's expected files hold the answers of the v1 rules: the engine without the pathway
    checks (the only v2 rules a world without the v2 columns and datasets meets) gives every one."""
    got_lines, got_summaries = _replay(world, epraccur, pathway=False)
    expected_lines, expected_summaries = _expected(world)
    assert got_lines == expected_lines
    assert got_summaries == expected_summaries


@pytest.mark.parametrize(("world", "epraccur"), V1_WORLDS)
def test_the_pathway_checks_change_a_v1_world_only_by_their_own_reasons(world: Path, epraccur: Path) -> None:
    """With checks 14 and 15, a v1 answer changes only by gaining OVERLAPPING_SPELL or
    ATTENDANCE_DURING_SPELL (a valid line then becomes a query); everything else stands."""
    got_lines, _ = _replay(world, epraccur, pathway=True)
    expected_lines, _ = _expected(world)
    changed = 0
    for got, want in zip(got_lines, expected_lines, strict=True):
        if got == want:
            continue
        changed += 1
        got_reasons, want_reasons = (
            set(got["reasons"].split(";")),
            set(filter(None, want["reasons"].split(";"))),
        )
        assert want_reasons < got_reasons, got["line_ref"]
        assert got_reasons - want_reasons <= PATHWAY_REASONS, got["line_ref"]
        assert (want["outcome"], got["outcome"]) in {
            ("valid", "query"),
            ("query", "query"),
            ("rejected", "rejected"),
        }
        assert {k: v for k, v in got.items() if k not in ("outcome", "reasons")} == {
            k: v for k, v in want.items() if k not in ("outcome", "reasons")
        }
    assert len(got_lines) == len(expected_lines)
    assert changed > 0
