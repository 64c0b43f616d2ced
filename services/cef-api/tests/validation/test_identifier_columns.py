"""An identifier typed where a reference or a code belongs: the outcome is the contract's, but the
value is not stored or shown with the line."""

from __future__ import annotations

import dataclasses

import pytest

from cef_api.validation.prepared import prepare_line, stored_codes

from .factories import raw_line, run, standard_world, with_check_digit

NHS = with_check_digit("943476591")
assert NHS is not None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("line_ref", NHS),
        ("line_ref", "943 476 5919"),
        ("line_ref", "1985-03-02"),
        ("line_ref", "TS1 7HA"),
        ("hrg_code", NHS),
        ("hrg_code", "TS17HA"),
        ("service_code", "1985-03-02"),
        ("point_of_delivery", NHS),
    ],
)
def test_an_identifier_in_a_code_column_changes_no_outcome_and_is_not_kept(column: str, value: str) -> None:
    reference = standard_world().reference()
    [given] = run(reference, [raw_line(nhs_number=NHS, **{column: value})])
    # The same line with a harmless value of the same standing (on no list, or a plain reference).
    stand_in = {
        "line_ref": "REF-1",
        "hrg_code": "ZZ99Z",
        "service_code": "NOTASERVICE",
        "point_of_delivery": "XX",
    }
    [plain] = run(reference, [raw_line(nhs_number=NHS, **{column: stand_in[column]})])
    assert (given.outcome, given.reasons, given.responsible_commissioner, given.expected_amount) == (
        plain.outcome,
        plain.reasons,
        plain.responsible_commissioner,
        plain.expected_amount,
    )
    stored = dataclasses.asdict(given)
    # The duplicate key is stored only as a digest (with the patient's token in it).
    stored.pop("duplicate_key")
    assert stored[column] is None
    assert value not in str(stored)


@pytest.mark.parametrize("line_ref", ["L0000012345", "RTR/2019-07-26/1", "00001", "TS1-7HA-9"])
def test_a_reference_merely_holding_digits_or_a_date_is_kept(line_ref: str) -> None:
    line = prepare_line(raw_line(line_ref=line_ref))
    assert not line.malformed
    assert stored_codes(line)[0] == line_ref
