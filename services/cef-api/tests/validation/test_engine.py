"""The checks of validation-rules.md through prepare_line + validate_line, on small factory-built worlds."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, localcontext

import pytest

from cef_api.validation.engine import (
    UnknownProviderError,
    prepare_line,
    require_market_forces_factor,
    summarise,
    validate_line,
)
from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.types import DuplicateKey, LineOutcome, Outcome, Reason

from .factories import World, fake_tokenise, header, nhs_numbers, raw_line, run, standard_world

NUMBERS = nhs_numbers()
ALICE = next(NUMBERS)  # in the trace, registered at A81001 (00K)
BOB = next(NUMBERS)  # in the trace, not registered, lives in YO1 (03Q)
CAROL = next(NUMBERS)  # registered, missing from the trace
DAVE = next(NUMBERS)  # in neither
ERIN = next(NUMBERS)  # in the trace without a postcode, not registered

R = Reason


def world() -> World:
    return (
        standard_world()
        .patient(ALICE, date(1980, 1, 1), "TS18 1HU")
        .registration(ALICE, "A81001", date(2015, 6, 1))
        .patient(BOB, date(1970, 5, 5), "yo1 7hh")
        .registration(CAROL, "A81001", date(2015, 6, 1))
        .patient(ERIN, date(1990, 2, 2), None)
    )


def one(w: World | None = None, **values: str | None) -> LineOutcome:
    [outcome] = run((w or world()).reference(), [raw_line(**values)])
    return outcome


def spaced(number: str) -> str:
    return f"{number[:3]} {number[3:6]} {number[6:]}"


# -- the happy path -------------------------------------------------------------------------------


def test_a_correct_line_is_valid() -> None:
    outcome = one(nhs_number=ALICE, date_of_birth="1980-01-01", postcode="TS18 1HU")
    assert (outcome.outcome, outcome.reasons) == (Outcome.VALID, ())
    assert outcome.responsible_commissioner == "00K"
    assert outcome.expected_amount == Decimal("2874.30")
    assert outcome.claimed_amount == Decimal("2874.30")
    assert outcome.nhs_token == fake_tokenise("nhs_number", ALICE)
    assert outcome.duplicate_key == DuplicateKey(
        "RTR", "00K", fake_tokenise("nhs_number", ALICE), date(2019, 7, 10), "HN12A", "DC"
    )


def test_codes_and_postcodes_compare_case_insensitively_and_values_are_trimmed() -> None:
    outcome = one(
        nhs_number=f"  {spaced(ALICE)} ",
        point_of_delivery=" dc ",
        hrg_code="hn12a",
        amount=" 2874.3 ",
        service_code="ncbps99z",
    )
    assert (outcome.outcome, outcome.reasons) == (Outcome.VALID, ())
    assert (outcome.hrg_code, outcome.point_of_delivery, outcome.service_code) == ("HN12A", "DC", "NCBPS99Z")


# -- 1. malformed ---------------------------------------------------------------------------------

MALFORMED_VARIANTS = [
    {"line_ref": None},
    {"line_ref": "   "},
    {"hrg_code": None},
    {"point_of_delivery": None},
    {"point_of_delivery": "XX"},
    {"point_of_delivery": "n/a"},
    {"point_of_delivery": "OP"},
    {"activity_date": None},
    {"activity_date": "n/a"},
    {"activity_date": "2019-13-40"},
    {"activity_date": "20190710"},
    {"activity_date": "2019-07-10T00:00"},
    {"date_of_birth": "XX"},
    {"date_of_birth": "1980-02-30"},
    {"discharge_date": "n/a"},
    {"discharge_date": "2019-07-09"},  # before activity_date, even for a day case
    {"amount": None},
    {"amount": "XX"},
    {"amount": "£2,874.30"},
    {"amount": "-5"},
    {"amount": "1e3"},
    {"amount": ".5"},
    {"amount": "2874.300"},
]


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
def test_malformed_lines_are_rejected_with_that_reason_alone(variant: dict[str, str | None]) -> None:
    # Everything else wrong too: no other check may run on a malformed line.
    outcome = one(**{"nhs_number": "123", "hrg_code": "ZZ99Z", "postcode": "ZZ9 9ZZ", **variant})
    assert outcome.outcome is Outcome.REJECTED
    assert outcome.reasons == (R.MALFORMED_LINE,)
    assert outcome.responsible_commissioner is None
    assert outcome.expected_amount is None
    assert outcome.duplicate_key is None


def test_malformed_fields_name_the_columns() -> None:
    line = prepare_line(raw_line(amount="XX", discharge_date="2019-07-01", point_of_delivery="xx"))
    assert line.malformed
    assert set(line.malformed_fields) == {"amount", "discharge_date", "point_of_delivery"}
    assert not prepare_line(raw_line()).malformed


def test_a_row_of_the_wrong_width_is_malformed() -> None:
    raw = raw_line(nhs_number=ALICE)
    raw.field_count = 12
    [outcome] = run(world().reference(), [raw])
    assert outcome.reasons == (R.MALFORMED_LINE,)


def test_a_malformed_line_still_claims_an_amount_that_matches_the_pattern() -> None:
    outcomes = run(
        world().reference(),
        [
            raw_line(1, line_ref="1", nhs_number=ALICE, activity_date="XX", amount="10.5"),
            raw_line(2, line_ref="2", nhs_number=ALICE, amount="XX"),
            raw_line(3, line_ref="3", nhs_number=ALICE, amount="2874.30"),
        ],
    )
    assert [o.claimed_amount for o in outcomes] == [Decimal("10.5"), None, Decimal("2874.30")]
    summary = summarise(outcomes)
    assert (summary.lines, summary.valid, summary.query, summary.rejected) == (3, 1, 0, 2)
    assert summary.claimed_amount == Decimal("2884.80")
    assert summary.validated_amount == Decimal("2874.30")
    assert str(summary.claimed_amount) == "2884.80"


def test_discharge_on_the_activity_date_is_not_malformed() -> None:
    assert one(nhs_number=ALICE, discharge_date="2019-07-10").outcome is Outcome.VALID


# -- 2. NHS number --------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [None, "999907980", "9990X17901", "943 476-5919", "99900000000"])
def test_invalid_nhs_numbers_reject_and_skip_the_patient_checks(number: str | None) -> None:
    outcome = one(nhs_number=number, amount="1.00", activity_date="2019-08-01")
    assert outcome.outcome is Outcome.REJECTED
    # Checks 2-5 still run; 6-9 do not (no PATIENT_NOT_FOUND, no commissioner).
    assert outcome.reasons == (R.ACTIVITY_OUTSIDE_PERIOD, R.NHS_NUMBER_INVALID, R.PRICE_MISMATCH)
    assert outcome.expected_amount == Decimal("2874.30")
    assert outcome.responsible_commissioner is None
    assert outcome.duplicate_key is None


def test_a_failing_check_digit_is_invalid() -> None:
    wrong = ALICE[:9] + str((int(ALICE[9]) + 1) % 10)
    assert one(nhs_number=wrong).reasons == (R.NHS_NUMBER_INVALID,)


@pytest.mark.parametrize(
    "form", [ALICE, spaced(ALICE), ALICE[:3] + "-" + ALICE[3:6] + "-" + ALICE[6:], f" {ALICE}\t"]
)
def test_every_accepted_nhs_number_form_gives_the_same_outcome(form: str) -> None:
    assert one(nhs_number=form) == one(nhs_number=ALICE)


# -- 3. period ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activity", "outside"),
    [("2019-06-30", True), ("2019-07-01", False), ("2019-07-31", False), ("2019-08-01", True)],
)
def test_activity_period_is_inclusive(activity: str, outside: bool) -> None:
    outcome = one(nhs_number=ALICE, activity_date=activity)
    assert (R.ACTIVITY_OUTSIDE_PERIOD in outcome.reasons) is outside
    assert outcome.outcome is (Outcome.REJECTED if outside else Outcome.VALID)


def test_a_discharge_after_the_period_does_not_matter() -> None:
    assert one(nhs_number=ALICE, discharge_date="2019-09-30").reasons == ()


# -- 4./5. tariff and price -----------------------------------------------------------------------


def test_no_tariff_row_is_a_query_without_expected_amount() -> None:
    outcome = one(nhs_number=ALICE, hrg_code="ZZ99Z")
    assert (outcome.outcome, outcome.reasons, outcome.expected_amount) == (
        Outcome.QUERY,
        (R.TARIFF_NOT_FOUND,),
        None,
    )
    # The HRG exists but not at this point of delivery.
    assert one(nhs_number=ALICE, point_of_delivery="OPFA").reasons == (R.TARIFF_NOT_FOUND,)


@pytest.mark.parametrize(
    ("amount", "mismatch"),
    [("2874.30", False), ("2874.3", False), ("2874.31", True), ("2874.29", True), ("2874", True)],
)
def test_price_must_match_to_the_penny(amount: str, mismatch: bool) -> None:
    outcome = one(nhs_number=ALICE, amount=amount)
    assert outcome.reasons == ((R.PRICE_MISMATCH,) if mismatch else ())
    assert outcome.expected_amount == Decimal("2874.30")


@pytest.mark.parametrize(
    ("point", "activity", "discharge", "expected"),
    [
        # EL: price 3604.51 × 1.139 = 4105.536... → 4105.54; trim 12; excess 389 × 1.139 = 443.071 → 443.07
        ("EL", "2019-07-10", None, "4105.54"),
        ("EL", "2019-07-10", "2019-07-10", "4105.54"),
        ("EL", "2019-07-10", "2019-07-22", "4105.54"),  # 12 days = trim point
        ("EL", "2019-07-10", "2019-07-23", "4548.61"),  # 1 excess day
        ("EL", "2019-07-10", "2019-08-09", "12080.80"),  # 30 days: 18 excess × 443.07
        # NEL: 4144.79 × 1.139 = 4720.9158... → 4720.92; trim 3; 385 × 1.139 = 438.515 → 438.52 (half-up)
        ("NEL", "2019-07-10", "2019-07-13", "4720.92"),
        ("NEL", "2019-07-10", "2019-07-15", "5597.96"),  # 2 excess days × 438.52
        # DC: never excess days, however long
        ("DC", "2019-07-10", "2019-07-30", "2874.30"),
    ],
)
def test_expected_price_with_excess_bed_days(
    point: str, activity: str, discharge: str | None, expected: str
) -> None:
    outcome = one(
        nhs_number=ALICE,
        point_of_delivery=point,
        activity_date=activity,
        discharge_date=discharge,
        amount=expected,
    )
    assert outcome.expected_amount == Decimal(expected)
    assert outcome.reasons == ()


def test_rounding_is_half_up_at_each_step() -> None:
    # 1.00 × 1.005 = 1.005 → 1.01 (banker's rounding would give 1.00); excess 0.10 × 1.005 = 0.1005 → 0.10
    # per day, so 3 days add 0.30 (rounding the product of days would give 0.30150 → 0.30 too, but
    # 7 days: 7 × 0.10 = 0.70 against round(0.7035) = 0.70; use 0.15: 0.15075 → 0.15, 7 × 0.15 = 1.05
    # while round(7 × 0.15075 = 1.05525) = 1.06).
    w = World().provider("RTR", "1.005").price("AA11A", "EL", "1.00", 0, "0.15").practice("A81001", "00K")
    w.patient(ALICE, None, None).registration(ALICE, "A81001", date(2015, 1, 1))
    outcome = one(
        w,
        nhs_number=ALICE,
        hrg_code="AA11A",
        point_of_delivery="EL",
        discharge_date="2019-07-17",
        amount="2.06",
    )
    assert outcome.expected_amount == Decimal("2.06")
    assert outcome.reasons == ()


def test_unknown_provider_cannot_be_priced() -> None:
    reference = world().reference()
    with pytest.raises(UnknownProviderError) as info:
        run(reference, [raw_line(nhs_number=ALICE)], invoice=header(provider_code="RZZ"))
    assert info.value.status == 422
    with pytest.raises(UnknownProviderError):
        require_market_forces_factor(header(provider_code="RZZ"), reference)
    assert require_market_forces_factor(header(provider_code="rtr"), reference) == Decimal("1.139")


def test_a_market_forces_factor_looked_up_by_the_caller_prices_the_line() -> None:
    """For callers validating many lines: the factor given is the one used, and the provider need not
    be looked up again (an unknown one is not refused on the line)."""
    line = prepare_line(raw_line(nhs_number=ALICE))  # DC HN12A: 2523.53

    def priced(provider_code: str, factor: Decimal) -> Decimal | None:
        return validate_line(
            line,
            nhs_token=fake_tokenise("nhs_number", ALICE),
            dob_token=None,
            header=header(provider_code=provider_code),
            reference=world().reference(),
            duplicates=InMemoryDuplicateIndex(),
            market_forces_factor=factor,
        ).expected_amount

    assert priced("RTR", Decimal("1.139")) == Decimal("2874.30")
    assert priced("RZZ", Decimal("1.5")) == Decimal("3785.30")  # 3785.295 rounds half up


def test_a_valid_nhs_number_needs_its_token() -> None:
    line = prepare_line(raw_line(nhs_number=ALICE))
    with pytest.raises(ValueError, match="nhs_token"):
        validate_line(
            line,
            nhs_token=None,
            dob_token=None,
            header=header(),
            reference=world().reference(),
            duplicates=InMemoryDuplicateIndex(),
        )


# -- 6./7. patient and date of birth --------------------------------------------------------------


def test_patient_not_found_is_a_query_and_registration_still_decides() -> None:
    outcome = one(nhs_number=CAROL, postcode="YO1 7HH")
    assert (outcome.outcome, outcome.reasons, outcome.responsible_commissioner) == (
        Outcome.QUERY,
        (R.PATIENT_NOT_FOUND,),
        "00K",
    )


def test_date_of_birth_mismatch() -> None:
    assert one(nhs_number=ALICE, date_of_birth="1980-01-02").reasons == (R.DOB_MISMATCH,)
    assert one(nhs_number=ALICE, date_of_birth="1980-01-01").reasons == ()
    assert one(nhs_number=ALICE, date_of_birth=None).reasons == ()
    # Not in the trace: nothing to compare with.
    assert one(nhs_number=CAROL, date_of_birth="1900-01-01").reasons == (R.PATIENT_NOT_FOUND,)


def test_a_trace_entry_without_a_date_of_birth_differs_from_any_date() -> None:
    w = world().patient(DAVE, None, "TS18 1HU")
    assert one(w, nhs_number=DAVE, date_of_birth="1980-01-01").reasons == (R.DOB_MISMATCH,)
    assert one(w, nhs_number=DAVE).reasons == ()


# -- 8. responsible commissioner ------------------------------------------------------------------


def test_a_listed_specialised_service_goes_to_its_commissioner() -> None:
    outcome = one(nhs_number=ALICE, service_code="ncbps13b")
    assert outcome.responsible_commissioner == "X24"
    assert outcome.reasons == (R.NOT_RESPONSIBLE_COMMISSIONER,)
    [to_x24] = run(
        world().reference(),
        [raw_line(nhs_number=ALICE, service_code="NCBPS13B")],
        invoice=header(commissioner_code="X24"),
    )
    assert (to_x24.outcome, to_x24.responsible_commissioner) == (Outcome.VALID, "X24")


def test_a_service_code_not_on_the_list_is_ignored() -> None:
    outcome = one(nhs_number=ALICE, service_code="NCBPS99Z")
    assert (outcome.responsible_commissioner, outcome.reasons) == ("00K", ())


def test_another_commissioner_rejects_the_line() -> None:
    outcome = one(nhs_number=BOB)  # not registered, lives in YO1 → 03Q
    assert (outcome.outcome, outcome.reasons, outcome.responsible_commissioner) == (
        Outcome.REJECTED,
        (R.NOT_RESPONSIBLE_COMMISSIONER,),
        "03Q",
    )
    assert outcome.duplicate_key is None


def test_the_invoice_commissioner_compares_case_insensitively() -> None:
    [outcome] = run(
        world().reference(), [raw_line(nhs_number=ALICE)], invoice=header(commissioner_code="00k")
    )
    assert outcome.reasons == ()


@pytest.mark.parametrize(
    ("activity", "commissioner"),
    [
        ("2019-07-04", "00K"),  # before the registration at B82001: residence (TS18 → 00K)
        ("2019-07-05", "02Y"),  # registered_from is inclusive
        ("2019-07-20", "02Y"),  # registered_to is inclusive
        ("2019-07-21", "00K"),  # the day after: residence again
    ],
)
def test_registration_boundaries_are_inclusive(activity: str, commissioner: str) -> None:
    w = (
        world()
        .patient(DAVE, None, "TS18 1HU")
        .registration(DAVE, "B82001", date(2019, 7, 5), date(2019, 7, 20))
    )
    assert one(w, nhs_number=DAVE, activity_date=activity).responsible_commissioner == commissioner


def test_a_move_between_practices_latest_registered_from_covering_the_date_wins() -> None:
    w = (
        world()
        .patient(DAVE, None, "YO1 7HH")
        .registration(DAVE, "B82001", date(2019, 7, 12))  # the new practice, current
        .registration(DAVE, "A81001", date(2010, 1, 1), date(2019, 7, 12))  # overlaps by one day
    )
    assert one(w, nhs_number=DAVE, activity_date="2019-07-11").responsible_commissioner == "00K"
    assert one(w, nhs_number=DAVE, activity_date="2019-07-12").responsible_commissioner == "02Y"
    assert one(w, nhs_number=DAVE, activity_date="2019-07-30").responsible_commissioner == "02Y"


def test_the_spell_stays_with_the_commissioner_at_admission() -> None:
    w = (
        world()
        .patient(DAVE, None, "YO1 7HH")
        .registration(DAVE, "A81001", date(2010, 1, 1), date(2019, 7, 11))
        .registration(DAVE, "B82001", date(2019, 7, 12))
    )
    outcome = one(
        w,
        nhs_number=DAVE,
        point_of_delivery="EL",
        activity_date="2019-07-10",
        discharge_date="2019-07-20",
        amount="4105.54",
    )
    assert (outcome.responsible_commissioner, outcome.reasons) == ("00K", ())


def test_a_practice_that_has_since_closed_still_decides() -> None:
    w = world().patient(DAVE, None, "YO1 7HH").registration(DAVE, "A81003", date(2010, 1, 1))
    assert one(w, nhs_number=DAVE).responsible_commissioner == "00K"


def test_a_practice_not_in_the_file_is_passed_over() -> None:
    w = (
        world()
        .patient(DAVE, None, "YO1 7HH")
        .registration(DAVE, "B82001", date(2010, 1, 1))
        .registration(DAVE, "Z99999", date(2019, 1, 1))  # later, but unknown: the older one decides
    )
    assert one(w, nhs_number=DAVE).responsible_commissioner == "02Y"
    only_unknown = world().patient(DAVE, None, "YO1 7HH").registration(DAVE, "Z99999", date(2019, 1, 1))
    assert one(only_unknown, nhs_number=DAVE).responsible_commissioner == "03Q"  # residence


def test_a_practice_without_a_commissioner_is_passed_over() -> None:
    w = (
        world()
        .practice("ALD200", None)
        .patient(DAVE, None, "YO1 7HH")
        .registration(DAVE, "ALD200", date(2010, 1, 1))
    )
    assert one(w, nhs_number=DAVE).responsible_commissioner == "03Q"


def test_a_registration_that_ended_is_passed_over() -> None:
    w = (
        world()
        .patient(DAVE, None, "YO1 7HH")
        .registration(DAVE, "A81001", date(2010, 1, 1), date(2019, 1, 1))
    )
    assert one(w, nhs_number=DAVE).responsible_commissioner == "03Q"


def test_unregistered_patient_in_the_trace_uses_the_trace_postcode_not_the_line() -> None:
    outcome = one(nhs_number=BOB, postcode="TS18 1HU")
    assert outcome.responsible_commissioner == "03Q"


def test_unregistered_patient_missing_from_the_trace_uses_the_line_postcode() -> None:
    outcome = one(nhs_number=DAVE, postcode="ts181hu")
    assert (outcome.outcome, outcome.reasons, outcome.responsible_commissioner) == (
        Outcome.QUERY,
        (R.PATIENT_NOT_FOUND,),
        "00K",
    )


def test_a_blank_trace_postcode_has_no_outward_code_even_with_a_line_postcode() -> None:
    outcome = one(nhs_number=ERIN, postcode="TS18 1HU")
    assert (outcome.outcome, outcome.reasons, outcome.responsible_commissioner) == (
        Outcome.QUERY,
        (R.RESIDENCE_UNKNOWN,),
        None,
    )


@pytest.mark.parametrize("postcode", [None, "ZZ9 9ZZ", "TS1", "not a postcode at all"])
def test_residence_unknown_without_an_outward_code_or_mapping(postcode: str | None) -> None:
    outcome = one(nhs_number=DAVE, postcode=postcode)
    assert outcome.reasons == (R.PATIENT_NOT_FOUND, R.RESIDENCE_UNKNOWN)
    assert outcome.responsible_commissioner is None
    assert outcome.outcome is Outcome.QUERY


def test_reasons_are_sorted_and_rejection_wins_over_query() -> None:
    outcome = one(nhs_number=BOB, date_of_birth="1999-01-01", amount="1", activity_date="2019-08-01")
    assert outcome.reasons == (
        R.ACTIVITY_OUTSIDE_PERIOD,
        R.DOB_MISMATCH,
        R.NOT_RESPONSIBLE_COMMISSIONER,
        R.PRICE_MISMATCH,
    )
    assert outcome.outcome is Outcome.REJECTED


# -- 9. duplicates ---------------------------------------------------------------------------------


def test_a_repeat_below_in_the_same_invoice_is_a_duplicate() -> None:
    outcomes = run(
        world().reference(),
        [
            raw_line(1, line_ref="1", nhs_number=ALICE),
            raw_line(
                2,
                line_ref="2",
                nhs_number=spaced(ALICE),
                hrg_code="hn12a",
                point_of_delivery="dc",
                amount="1",
            ),
        ],
    )
    assert outcomes[0].outcome is Outcome.VALID
    assert outcomes[1].reasons == (R.DUPLICATE_ACTIVITY, R.PRICE_MISMATCH)
    assert outcomes[1].outcome is Outcome.REJECTED
    assert outcomes[1].duplicate_key is None


def test_a_query_line_makes_later_lines_duplicates() -> None:
    outcomes = run(
        world().reference(),
        [
            raw_line(1, line_ref="1", nhs_number=ALICE, amount="1"),
            raw_line(2, line_ref="2", nhs_number=ALICE),
        ],
    )
    assert outcomes[0].outcome is Outcome.QUERY
    assert outcomes[1].reasons == (R.DUPLICATE_ACTIVITY,)


def test_a_rejected_line_never_makes_later_lines_duplicates() -> None:
    outcomes = run(
        world().reference(),
        [
            raw_line(1, line_ref="1", nhs_number=ALICE, service_code="NCBPS13B"),  # rejected: X24 pays
            raw_line(2, line_ref="2", nhs_number=ALICE),
            raw_line(3, line_ref="3", nhs_number=ALICE, activity_date="2019-07-10"),
        ],
    )
    assert [o.outcome for o in outcomes] == [Outcome.REJECTED, Outcome.VALID, Outcome.REJECTED]
    assert outcomes[2].reasons == (R.DUPLICATE_ACTIVITY,)


def test_an_earlier_invoice_makes_a_duplicate_but_not_for_another_provider_or_commissioner() -> None:
    w = world().provider("RVW", "1.139")
    reference = w.reference()
    duplicates = InMemoryDuplicateIndex()
    first = run(reference, [raw_line(nhs_number=ALICE)], duplicates=duplicates)
    assert first[0].outcome is Outcome.VALID
    assert len(duplicates) == 1
    again = run(
        reference, [raw_line(nhs_number=ALICE)], invoice=header(invoice_number="2"), duplicates=duplicates
    )
    assert again[0].reasons == (R.DUPLICATE_ACTIVITY,)
    other_provider = run(
        reference, [raw_line(nhs_number=ALICE)], invoice=header(provider_code="RVW"), duplicates=duplicates
    )
    assert other_provider[0].reasons == ()
    other_commissioner = run(
        reference,
        [raw_line(nhs_number=ALICE, service_code="NCBPS13B")],
        invoice=header(commissioner_code="X24"),
        duplicates=duplicates,
    )
    assert other_commissioner[0].reasons == ()


@pytest.mark.parametrize(
    "change",
    [
        {"activity_date": "2019-07-11"},
        {"hrg_code": "HN12A", "point_of_delivery": "EL", "amount": "4105.54"},
        {"nhs_number": "CAROL"},
    ],
)
def test_a_different_key_is_not_a_duplicate(change: dict[str, str]) -> None:
    if change.get("nhs_number") == "CAROL":
        change = {"nhs_number": CAROL}
    outcomes = run(
        world().reference(),
        [
            raw_line(1, line_ref="1", nhs_number=ALICE),
            raw_line(2, line_ref="2", **{"nhs_number": ALICE, **change}),
        ],
    )
    assert R.DUPLICATE_ACTIVITY not in outcomes[1].reasons


def test_a_malformed_or_invalid_line_is_never_a_duplicate_and_never_counts() -> None:
    duplicates = InMemoryDuplicateIndex()
    outcomes = run(
        world().reference(),
        [
            raw_line(1, line_ref="1", nhs_number=ALICE, amount="XX"),
            raw_line(2, line_ref="2", nhs_number="123"),
            raw_line(3, line_ref="3", nhs_number=ALICE),
            raw_line(4, line_ref="4", nhs_number=ALICE, amount="XX"),
        ],
        duplicates=duplicates,
    )
    assert [o.outcome for o in outcomes] == [
        Outcome.REJECTED,
        Outcome.REJECTED,
        Outcome.VALID,
        Outcome.REJECTED,
    ]
    assert outcomes[3].reasons == (R.MALFORMED_LINE,)
    assert len(duplicates) == 1


def test_money_is_exact_whatever_the_decimal_context_and_however_many_digits() -> None:
    huge = "9" * 40 + ".99"
    with localcontext() as ctx:
        ctx.prec = 3  # a caller's narrow context must not round prices or sums
        outcomes = run(
            world().reference(),
            [
                raw_line(1, line_ref="1", nhs_number=ALICE, amount=huge),
                raw_line(2, line_ref="2", nhs_number=ALICE, activity_date="2019-07-11", amount="2874.30"),
            ],
        )
        summary = summarise(outcomes)
    assert outcomes[0].reasons == (R.PRICE_MISMATCH,)
    assert outcomes[1].expected_amount == Decimal("2874.30")
    assert outcomes[1].reasons == ()
    assert str(summary.claimed_amount) == "1" + "0" * 36 + "2874.29"  # 10**40 - 0.01 + 2874.30
    assert summary.validated_amount == Decimal("2874.30")


def test_registrations_starting_the_same_day_are_decided_whatever_their_order() -> None:
    for order in ((0, 1, 2), (2, 1, 0), (1, 2, 0)):
        w = world().practice("C83001", "04C").patient(DAVE, None, "YO1 7HH")
        candidates = [
            ("B82001", date(2019, 7, 1), date(2019, 7, 31)),
            ("A81001", date(2019, 7, 1), None),  # open-ended: the latest registered_to
            ("C83001", date(2019, 7, 1), date(2019, 7, 20)),
        ]
        for i in order:
            w.registration(DAVE, *candidates[i])
        assert one(w, nhs_number=DAVE).responsible_commissioner == "00K"
