"""v2 optional columns (administrative_category, overseas_visitor_status, care_basis,
prior_approval_ref): their lists, compared exactly after trimming and upper-casing, and checks 10-11
(PRIVATE_PATIENT, CHARGEABLE_OVERSEAS_VISITOR) alone and beside other reasons."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cef_api.validation.csvfile import RawLine
from cef_api.validation.engine import prepare_line
from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.prepared import shown_prior_approval_ref, stored_codes
from cef_api.validation.rules import LineContext
from cef_api.validation.rules.eligibility import check_chargeable_overseas_visitor, check_private_patient
from cef_api.validation.types import LineOutcome, Outcome, Reason

from .factories import World, fake_tokenise, header, nhs_numbers, raw_line, run, standard_world

PERSON = next(iter(nhs_numbers(999_300_000)))
OTHER_PERSON = next(iter(nhs_numbers(999_310_000)))

# The spec's lists, written out again here rather than imported.
ADMINISTRATIVE_CATEGORIES = {"01", "02", "03", "04"}
OVERSEAS_VISITOR_STATUSES = {"1", "2", "3", "4", "8", "9"}
CARE_BASES = {"S117", "CHC"}
LISTS = {
    "administrative_category": ADMINISTRATIVE_CATEGORIES,
    "overseas_visitor_status": OVERSEAS_VISITOR_STATUSES,
    "care_basis": CARE_BASES,
}


def _digit_strings(most: int) -> list[str]:
    return ["".join(digits) for n in range(1, most + 1) for digits in product("0123456789", repeat=n)]


def _prepared(column: str, value: str | None) -> tuple[bool, tuple[str, ...], str | None]:
    line = prepare_line(raw_line(1, nhs_number=PERSON, **{column: value}))
    return line.malformed, line.malformed_fields, getattr(line, column)


@pytest.mark.parametrize("column", ["administrative_category", "overseas_visitor_status"])
def test_every_digit_code_up_to_three_digits_is_on_the_list_or_malformed(column: str) -> None:
    # Exhaustive over 1110 codes: exactly the list is accepted (`2` is not `02`, `08` is not `8`).
    for code in _digit_strings(3):
        malformed, fields, held = _prepared(column, code)
        if code in LISTS[column]:
            assert (malformed, fields, held) == (False, (), code), code
        else:
            assert (malformed, fields) == (True, (column,)), code


@pytest.mark.parametrize(
    ("column", "written", "held"),
    [
        ("administrative_category", " 02 ", "02"),
        ("administrative_category", "\t01", "01"),
        ("overseas_visitor_status", " 9 ", "9"),
        ("care_basis", "S117", "S117"),
        ("care_basis", "s117", "S117"),
        ("care_basis", " s117\t", "S117"),
        ("care_basis", "chc", "CHC"),
        ("care_basis", "Chc", "CHC"),
        ("care_basis", " CHC ", "CHC"),
    ],
)
def test_values_are_trimmed_and_upper_cased(column: str, written: str, held: str) -> None:
    assert _prepared(column, written) == (False, (), held)


@pytest.mark.parametrize(
    ("column", "written"),
    [
        ("administrative_category", "2"),
        ("administrative_category", "002"),
        ("administrative_category", "0 2"),
        ("administrative_category", "02.0"),
        ("administrative_category", "05"),
        ("administrative_category", "00"),
        ("administrative_category", "private"),
        ("administrative_category", "０２"),  # full-width digits are not the code
        ("overseas_visitor_status", "08"),
        ("overseas_visitor_status", "02"),
        ("overseas_visitor_status", "0"),
        ("overseas_visitor_status", "5"),
        ("overseas_visitor_status", "6"),
        ("overseas_visitor_status", "7"),
        ("overseas_visitor_status", "10"),
        ("overseas_visitor_status", "A"),
        ("overseas_visitor_status", "1.0"),
        ("care_basis", "S 117"),
        ("care_basis", "S-117"),
        ("care_basis", "117"),
        ("care_basis", "S0117"),
        ("care_basis", "S117A"),
        ("care_basis", "CHC1"),
        ("care_basis", "NHS CHC"),
        ("care_basis", "C H C"),
        ("care_basis", "S117;CHC"),
        ("care_basis", "s117."),
        ("care_basis", "section 117"),
    ],
)
def test_values_off_the_list_make_the_line_malformed(column: str, written: str) -> None:
    malformed, fields, _ = _prepared(column, written)
    assert (malformed, fields) == (True, (column,))
    [outcome] = run(standard_world().reference(), [raw_line(1, nhs_number=PERSON, **{column: written})])
    assert (outcome.outcome, outcome.reasons) == (Outcome.REJECTED, (Reason.MALFORMED_LINE,))
    assert outcome.responsible_commissioner is None
    assert outcome.expected_amount is None


@given(
    st.sampled_from(sorted(LISTS)),
    st.text(alphabet=st.characters(codec="ascii"), max_size=6),
)
def test_a_present_value_is_accepted_exactly_when_on_its_list(column: str, written: str) -> None:
    malformed, fields, held = _prepared(column, written)
    trimmed = written.strip()
    if not trimmed:
        assert (malformed, held) == (False, None)
    elif trimmed.upper() in LISTS[column]:
        assert (malformed, held) == (False, trimmed.upper())
    else:
        assert (malformed, fields) == (True, (column,))


@pytest.mark.parametrize("blank", [None, "", "   ", "\t"])
def test_blank_values_are_missing_and_fine(blank: str | None) -> None:
    line = prepare_line(
        raw_line(
            nhs_number=PERSON,
            administrative_category=blank,
            overseas_visitor_status=blank,
            care_basis=blank,
            prior_approval_ref=blank,
        )
    )
    assert not line.malformed
    assert (line.administrative_category, line.overseas_visitor_status, line.care_basis) == (None, None, None)
    assert line.prior_approval_ref is None


def test_a_bad_column_is_named_beside_the_other_problems() -> None:
    line = prepare_line(
        raw_line(nhs_number=PERSON, amount="£1", care_basis="S118", overseas_visitor_status="02")
    )
    assert line.malformed_fields == ("amount", "overseas_visitor_status", "care_basis")


# --- the prior-approval reference: free text, kept as typed, never shown with an identifier in it


@pytest.mark.parametrize(
    "written", ["PA-00K-2019-0042", " pa-00k-2019-0042 ", "NHSE/IFR/19/00042", "approved"]
)
def test_a_prior_approval_ref_is_kept_as_typed_and_shown(written: str) -> None:
    line = prepare_line(raw_line(nhs_number=PERSON, prior_approval_ref=written))
    assert line.prior_approval_ref == written.strip()
    assert not line.malformed
    assert "prior_approval_ref" not in line.withheld
    assert shown_prior_approval_ref(line) == written.strip()


@pytest.mark.parametrize(
    "written",
    ["943 476 5919", "PA for 9434765919", "approved 2019-07-01", "TS18 1HU", "ref 01/07/2019"],
)
def test_a_prior_approval_ref_carrying_an_identifier_is_withheld(written: str) -> None:
    line = prepare_line(raw_line(nhs_number=PERSON, prior_approval_ref=written))
    assert not line.malformed  # free text: nothing makes it malformed
    assert "prior_approval_ref" in line.withheld
    assert shown_prior_approval_ref(line) is None
    # The other columns are still stored as they are.
    assert stored_codes(line) == ("00001", "HN12A", "DC", None)


def test_no_outcome_carries_the_prior_approval_ref() -> None:
    # Nothing stores the reference: no field of a line's outcome holds it.
    written = "PA-SECRET-REF-0042"
    [outcome] = run(_world().reference(), [_line(prior_approval_ref=written)])
    assert written not in repr(dataclasses.astuple(outcome))
    assert "prior_approval_ref" not in {f.name for f in dataclasses.fields(LineOutcome)}


# --- checks 10 and 11


def _world() -> World:
    return (
        standard_world()
        .patient(PERSON, date(1980, 1, 1), "TS18 1HU")
        .registration(PERSON, "A81001", date(2015, 6, 1))
    )


def _line(line_no: int = 1, **values: str | None) -> RawLine:
    return raw_line(line_no, **{"nhs_number": PERSON, "date_of_birth": "1980-01-01", **values})


def _decide(**values: str | None) -> LineOutcome:
    [outcome] = run(_world().reference(), [_line(1, **values)])
    return outcome


def test_the_plain_line_is_valid() -> None:
    outcome = _decide()
    assert (outcome.outcome, outcome.reasons, outcome.responsible_commissioner) == (Outcome.VALID, (), "00K")
    assert outcome.expected_amount == Decimal("2874.30")


@pytest.mark.parametrize(
    ("category", "reasons"),
    [
        ("01", ()),
        ("02", (Reason.PRIVATE_PATIENT,)),
        ("03", ()),
        ("04", ()),
        (None, ()),
        (" 02 ", (Reason.PRIVATE_PATIENT,)),
    ],
)
def test_check_10_private_patient(category: str | None, reasons: tuple[Reason, ...]) -> None:
    outcome = _decide(administrative_category=category)
    assert outcome.reasons == reasons
    assert outcome.outcome == (Outcome.REJECTED if reasons else Outcome.VALID)
    # The other checks still ran: the commissioner and the price are reported.
    assert outcome.responsible_commissioner == "00K"
    assert outcome.expected_amount == Decimal("2874.30")


@pytest.mark.parametrize(
    ("status", "chargeable"),
    [("1", False), ("2", True), ("3", True), ("4", True), ("8", False), ("9", False), (None, False)],
)
def test_check_11_chargeable_overseas_visitor(status: str | None, chargeable: bool) -> None:
    outcome = _decide(overseas_visitor_status=status)
    assert outcome.reasons == ((Reason.CHARGEABLE_OVERSEAS_VISITOR,) if chargeable else ())
    assert outcome.outcome == (Outcome.REJECTED if chargeable else Outcome.VALID)
    assert outcome.responsible_commissioner == "00K"


@pytest.mark.parametrize(
    ("values", "reasons"),
    [
        (
            {"administrative_category": "02", "overseas_visitor_status": "3"},
            {"PRIVATE_PATIENT", "CHARGEABLE_OVERSEAS_VISITOR"},
        ),
        (
            {"administrative_category": "02", "activity_date": "2019-08-01"},
            {"PRIVATE_PATIENT", "ACTIVITY_OUTSIDE_PERIOD"},
        ),
        (
            {"overseas_visitor_status": "4", "nhs_number": "123"},
            {"CHARGEABLE_OVERSEAS_VISITOR", "NHS_NUMBER_INVALID"},
        ),
        (
            {"overseas_visitor_status": "2", "amount": "1.00"},
            {"CHARGEABLE_OVERSEAS_VISITOR", "PRICE_MISMATCH"},
        ),
        ({"administrative_category": "02", "hrg_code": "ZZ99Z"}, {"PRIVATE_PATIENT", "TARIFF_NOT_FOUND"}),
        (
            {"administrative_category": "02", "date_of_birth": "1980-01-02"},
            {"PRIVATE_PATIENT", "DOB_MISMATCH"},
        ),
        (
            {"overseas_visitor_status": "3", "nhs_number": OTHER_PERSON},
            {"CHARGEABLE_OVERSEAS_VISITOR", "PATIENT_NOT_FOUND", "RESIDENCE_UNKNOWN"},
        ),
        (
            {"administrative_category": "02", "service_code": "NCBPS13B"},
            {"PRIVATE_PATIENT", "NOT_RESPONSIBLE_COMMISSIONER"},
        ),
    ],
)
def test_checks_10_and_11_stand_beside_other_reasons(values: dict[str, str], reasons: set[str]) -> None:
    outcome = _decide(**values)
    assert {r.value for r in outcome.reasons} == reasons
    assert list(outcome.reasons) == sorted(outcome.reasons)
    assert outcome.outcome is Outcome.REJECTED


def test_a_malformed_line_gets_no_v2_reason() -> None:
    outcome = _decide(administrative_category="02", overseas_visitor_status="3", amount="")
    assert (outcome.outcome, outcome.reasons) == (Outcome.REJECTED, (Reason.MALFORMED_LINE,))


def test_a_rejected_private_line_never_makes_a_later_line_a_duplicate() -> None:
    duplicates = InMemoryDuplicateIndex()
    first, second = run(
        _world().reference(),
        [_line(1, administrative_category="02"), _line(2, line_ref="00002")],
        duplicates=duplicates,
    )
    assert first.reasons == (Reason.PRIVATE_PATIENT,)
    assert first.duplicate_key is None
    assert (second.outcome, second.reasons) == (Outcome.VALID, ())


def test_the_units_alone() -> None:
    def context(**values: str | None) -> LineContext:
        line = prepare_line(_line(1, **values))
        token = fake_tokenise("nhs_number", PERSON)
        return LineContext(
            line, header(), _world().reference(), InMemoryDuplicateIndex(), Decimal("1.139"), token, None
        )

    ctx = context(administrative_category="02", overseas_visitor_status="2")
    check_private_patient(ctx)
    check_chargeable_overseas_visitor(ctx)
    assert ctx.reasons == [Reason.PRIVATE_PATIENT, Reason.CHARGEABLE_OVERSEAS_VISITOR]
    quiet = context(administrative_category="01", overseas_visitor_status="9")
    check_private_patient(quiet)
    check_chargeable_overseas_visitor(quiet)
    assert quiet.reasons == []
