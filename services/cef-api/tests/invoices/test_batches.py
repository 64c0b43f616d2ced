"""The batched path (tokenise_batch → assess_batch → settle_batch) stores, column by column, what
validate_line decides of every line in submission order (duplicates and the pathway checks 14 and 15
included), whatever the batch size: the differential test against the oracle compares the outcomes,
this every stored value and its type, the spells kept for later invoices and the summaries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import generate_world
import pytest
from validation.factories import fake_tokenise, reference_from_files
from validation.replay import replay_invoice

from cef_api.invoices.batches import KeyDigests, assess_batch, settle_batch, tokenise_batch
from cef_api.invoices.repository import LINE_COLUMNS
from cef_api.invoices.schemas import pennies
from cef_api.tokeniser_client import TokenBatch
from cef_api.validation.csvfile import RawLine, read_backing_data, split_backing_batches, survey_backing_data
from cef_api.validation.engine import SummaryAccumulator, UnknownProviderError, summarise
from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.postcode import compact_postcode
from cef_api.validation.prepared import PREPARED_COLUMNS, prepare_line
from cef_api.validation.rules.pathway import InMemorySpellIndex, pathway_fact
from cef_api.validation.types import InvoiceHeader, LineOutcome, Outcome, Reason
from cef_api.validation.values import parse_date_uncached

SEQ = 3


class _Tokeniser:
    """The one method of TokeniserClient that tokenise_batch calls, answering with fake_tokenise."""

    def tokenise(self, kind: str, values: Sequence[str], *, key_version: int | None = None) -> TokenBatch:
        return TokenBatch(key_version or 1, [fake_tokenise(kind, value) for value in values])


TOKENISER: Any = _Tokeniser()


def _header(fields: dict[str, str], **codes: str) -> InvoiceHeader:
    values = {**fields, **codes}
    return InvoiceHeader(
        values["invoice_number"],
        values["provider_code"],
        values["commissioner_code"],
        date.fromisoformat(values["invoice_date"]),
        date.fromisoformat(values["period_start"]),
        date.fromisoformat(values["period_end"]),
    )


def _stored(outcome: LineOutcome, raw: RawLine) -> tuple[Any, ...]:
    """The row of repository.LINE_COLUMNS that a line decided by validate_line is stored as, with the
    tokens of its date of birth and postcode (kept only to re-identify the line's patient)."""
    expected, claimed, key = outcome.expected_amount, outcome.claimed_amount, outcome.duplicate_key
    dob = parse_date_uncached(raw.values.get("date_of_birth"))
    postcode = compact_postcode(raw.values.get("postcode"))
    return (
        SEQ,
        outcome.line_no,
        outcome.line_ref,
        outcome.outcome.value,
        ";".join(reason.value for reason in outcome.reasons),
        outcome.responsible_commissioner,
        pennies(expected) if expected is not None else None,
        pennies(claimed) if claimed is not None else None,
        outcome.nhs_token,
        outcome.activity_date.isoformat() if outcome.activity_date is not None else None,
        outcome.hrg_code,
        outcome.point_of_delivery,
        outcome.service_code,
        fake_tokenise("date_of_birth", dob.isoformat()) if dob is not None else None,
        fake_tokenise("postcode", postcode) if postcode is not None else None,
        KeyDigests().digest(key) if key is not None else None,
    )


def _spell_row(outcome: LineOutcome, raw: RawLine, commissioner_code: str) -> tuple[Any, ...] | None:
    """The invoice_spell row a line decided by validate_line leaves for later lines: a spell with
    nights whose outcome is not rejected."""
    fact = pathway_fact(prepare_line(raw), outcome.nhs_token)
    if fact is None or outcome.outcome is Outcome.REJECTED:
        return None
    token, admission, discharge = fact
    if discharge is None:  # an attendance: no spell
        return None
    return (
        SEQ,
        outcome.line_no,
        commissioner_code.upper(),
        token,
        admission.isoformat(),
        discharge.isoformat(),
    )


def _typed(rows: list[tuple[Any, ...]]) -> list[list[tuple[type, Any]]]:
    # Exact types too: a StrEnum where the database expects str would compare equal.
    return [[(type(value), value) for value in row] for row in rows]


@pytest.mark.parametrize("batch_lines", [1, 7, 1000])
@pytest.mark.parametrize("lower_case_codes", [False, True])
def test_batches_store_what_validate_line_decides(
    world: generate_world.World, batch_lines: int, lower_case_codes: bool
) -> None:
    reference = reference_from_files(world.reference_files())
    duplicates, keys = InMemoryDuplicateIndex(), set[str]()
    line_spells, batch_spells = InMemorySpellIndex(), InMemorySpellIndex()
    pathway_reasons = 0
    for invoice in world.invoices:
        fields = invoice.header
        codes = (
            {
                "provider_code": fields["provider_code"].lower(),
                "commissioner_code": fields["commissioner_code"].lower(),
            }
            if lower_case_codes
            else {}
        )
        header = _header(fields, **codes)
        chunks = [invoice.backing[i : i + 500] for i in range(0, len(invoice.backing), 500)]
        lines = list(read_backing_data(chunks))
        outcomes = replay_invoice(reference, lines, invoice=header, duplicates=duplicates, spells=line_spells)
        expected = [_stored(o, raw) for o, raw in zip(outcomes, lines, strict=True)]
        expected_spells = [
            row
            for o, raw in zip(outcomes, lines, strict=True)
            if (row := _spell_row(o, raw, header.commissioner_code)) is not None
        ]
        pathway_reasons += sum(
            reason in (Reason.OVERLAPPING_SPELL, Reason.ATTENDANCE_DURING_SPELL)
            for o in outcomes
            for reason in o.reasons
        )

        survey = survey_backing_data(chunks, batch_lines=batch_lines)
        layout, batches = split_backing_batches(chunks, survey, PREPARED_COLUMNS)
        stored: list[tuple[Any, ...]] = []
        spell_rows: list[tuple[Any, ...]] = []
        summary = SummaryAccumulator()
        for batch in batches:
            tokenised = tokenise_batch(batch, layout, tokeniser=TOKENISER, key_version=1, dob_key_version=1)
            assessed = assess_batch(tokenised, seq=SEQ, header=header, reference=reference)
            assert [len(column) for column in assessed.columns] == [batch.lines] * len(LINE_COLUMNS)
            settled = settle_batch(
                assessed,
                keys=keys,
                commissioner_code=header.commissioner_code,
                spells=batch_spells,
                summary=summary,
            )
            stored.extend(settled.rows())
            spell_rows.extend(settled.spell_rows)
        assert _typed(stored) == _typed(expected)
        assert _typed(spell_rows) == _typed(expected_spells)
        assert summary.result() == summarise(outcomes)
    assert len(duplicates) == len(keys) > 0
    assert len(line_spells) == len(batch_spells) > 0
    # The world exercises checks 14 and 15, so the comparisons above cover them.
    assert pathway_reasons > 0


def test_an_unknown_provider_is_refused_on_the_first_priced_line_as_line_by_line(
    world: generate_world.World,
) -> None:
    reference = reference_from_files(world.reference_files())
    header = _header(world.invoices[0].header, provider_code="ZZZ")
    head = ",".join(generate_world.COLUMNS)
    malformed = "L1,9434765919,,,,,EL,AB12C,2019-07-01,,n/a\nL2,,,,,,XX,AB12C,2019-07-01,,1.00\n"
    priced = "L3,9434765919,,,,,EL,AB12C,2019-07-01,,1.00\n"

    def assessed(body: str) -> list[tuple[Any, ...]]:
        chunks = [f"{head}\n{body}".encode()]
        layout, batches = split_backing_batches(
            chunks, survey_backing_data(chunks, batch_lines=10), PREPARED_COLUMNS
        )
        tokenised = tokenise_batch(
            next(batches), layout, tokeniser=TOKENISER, key_version=1, dob_key_version=1
        )
        return list(assess_batch(tokenised, seq=SEQ, header=header, reference=reference).rows())

    # validate_line needs no market forces factor for a malformed line, so neither does a batch of them.
    assert [row[3:5] for row in assessed(malformed)] == [("rejected", "MALFORMED_LINE")] * 2
    with pytest.raises(UnknownProviderError):
        assessed(malformed + priced)
