"""The batched path (tokenise_batch → assess_batch → settle_duplicates) stores, column by column, what
validate_line decides of every line, whatever the batch size: the differential test against the oracle
compares the outcomes, this every stored value and its type."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date
from typing import Any

import generate_world
import pytest

from cef_api.invoices.batches import KeyDigests, assess_batch, settle_duplicates, tokenise_batch
from cef_api.invoices.repository import LINE_COLUMNS
from cef_api.invoices.schemas import pennies
from cef_api.reference.parsers import parse_dataset
from cef_api.tokeniser_client import TokenBatch
from cef_api.validation.csvfile import read_backing_data, split_backing_batches, survey_backing_data
from cef_api.validation.engine import (
    SummaryAccumulator,
    UnknownProviderError,
    prepare_line,
    validate_line,
)
from cef_api.validation.memory import InMemoryDuplicateIndex, InMemoryReferenceData
from cef_api.validation.prepared import PREPARED_COLUMNS
from cef_api.validation.types import InvoiceHeader, LineOutcome

SEQ = 3


def _token(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()[:24]


class _Tokeniser:
    """The one method of TokeniserClient that tokenise_batch calls, answering with `_token`."""

    def tokenise(self, kind: str, values: Sequence[str], *, key_version: int | None = None) -> TokenBatch:
        return TokenBatch(key_version or 1, [_token(kind, value) for value in values])


TOKENISER: Any = _Tokeniser()


def _reference(world: generate_world.World) -> InMemoryReferenceData:
    rows = {dataset: parse_dataset(dataset, body) for dataset, body in world.reference_files().items()}
    return InMemoryReferenceData.from_rows(
        gp_practices=rows["gp-practices"],
        patients=rows["patients"],
        registrations=rows["registrations"],
        postcode_districts=rows["postcode-districts"],
        tariff=rows["tariff"],
        providers=rows["providers"],
        specialised_services=rows["specialised-services"],
        tokenise=_token,
    )


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


def _stored(outcome: LineOutcome) -> tuple[Any, ...]:
    """The row of repository.LINE_COLUMNS that a line decided by validate_line is stored as."""
    expected, claimed, key = outcome.expected_amount, outcome.claimed_amount, outcome.duplicate_key
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
        KeyDigests().digest(key) if key is not None else None,
    )


def _typed(rows: list[tuple[Any, ...]]) -> list[list[tuple[type, Any]]]:
    # Exact types too: a StrEnum where the database expects str would compare equal.
    return [[(type(value), value) for value in row] for row in rows]


@pytest.mark.parametrize("batch_lines", [1, 7, 1000])
@pytest.mark.parametrize("lower_case_codes", [False, True])
def test_batches_store_what_validate_line_decides(
    world: generate_world.World, batch_lines: int, lower_case_codes: bool
) -> None:
    reference = _reference(world)
    duplicates, keys = InMemoryDuplicateIndex(), set[str]()
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
        expected = []
        for raw in read_backing_data(chunks):
            line = prepare_line(raw)
            outcome = validate_line(
                line,
                nhs_token=_token("nhs_number", line.nhs_number) if line.nhs_number else None,
                dob_token=_token("date_of_birth", line.date_of_birth.isoformat())
                if line.date_of_birth
                else None,
                header=header,
                reference=reference,
                duplicates=duplicates,
            )
            expected.append(_stored(outcome))

        survey = survey_backing_data(chunks, batch_lines=batch_lines)
        layout, batches = split_backing_batches(chunks, survey, PREPARED_COLUMNS)
        stored: list[tuple[Any, ...]] = []
        for batch in batches:
            tokenised = tokenise_batch(batch, layout, tokeniser=TOKENISER, key_version=1, dob_key_version=1)
            assessed = assess_batch(tokenised, seq=SEQ, header=header, reference=reference)
            assert [len(column) for column in assessed.columns] == [batch.lines] * len(LINE_COLUMNS)
            stored.extend(settle_duplicates(assessed, keys, SummaryAccumulator()).rows())
        assert _typed(stored) == _typed(expected)
    assert len(duplicates) == len(keys) > 0


def test_an_unknown_provider_is_refused_on_the_first_priced_line_as_line_by_line(
    world: generate_world.World,
) -> None:
    reference = _reference(world)
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
