"""Properties over generated lines: pricing against an independent computation, outcome consistency."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.rules import Verdict, expected_price, outcome_for, verdict_for
from cef_api.validation.rules.outcome import QUERYING, REJECTING
from cef_api.validation.types import Outcome, Reason, TariffEntry

from .factories import header, nhs_numbers, raw_line, run, standard_world

NUMBERS = nhs_numbers(999_100_000)
PEOPLE = [next(NUMBERS) for _ in range(6)]


def _pennies_half_up(value: Fraction) -> Fraction:
    """Round a non-negative exact value to whole pennies, halves up, in integer arithmetic."""
    pennies = value * 100
    whole = pennies.numerator // pennies.denominator
    if pennies - whole >= Fraction(1, 2):
        whole += 1
    return Fraction(whole, 100)


money = st.integers(min_value=0, max_value=5_000_000).map(lambda p: Decimal(p).scaleb(-2))
factors = st.integers(min_value=500, max_value=1500).map(lambda f: Decimal(f).scaleb(-3))


@given(
    price=money,
    excess_price=money,
    factor=factors,
    trim=st.integers(min_value=0, max_value=40),
    point=st.sampled_from(["EL", "NEL", "DC", "OPFA", "OPFU"]),
    stay=st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
)
def test_expected_price_matches_an_independent_computation(
    price: Decimal, excess_price: Decimal, factor: Decimal, trim: int, point: str, stay: int | None
) -> None:
    admitted = date(2019, 7, 1)
    discharged = None if stay is None else admitted + timedelta(days=stay)
    tariff = TariffEntry("AA11A", point, price, trim, excess_price)
    got = expected_price(tariff, factor, point, admitted, discharged)

    base = _pennies_half_up(Fraction(price) * Fraction(factor))
    excess_days = max(0, (stay or 0) - trim) if point in ("EL", "NEL") else 0
    want = base + excess_days * _pennies_half_up(Fraction(excess_price) * Fraction(factor))
    assert Fraction(got) == want
    assert got == got.quantize(Decimal("0.01"))


def test_outcome_for_each_reason() -> None:
    assert outcome_for([]) is Outcome.VALID
    for reason in Reason:
        assert outcome_for([reason]) is (Outcome.REJECTED if reason in REJECTING else Outcome.QUERY)
        assert outcome_for([reason, Reason.PRICE_MISMATCH]) is (
            Outcome.REJECTED if reason in REJECTING else Outcome.QUERY
        )
    assert REJECTING | QUERYING == set(Reason)
    assert not REJECTING & QUERYING


@given(st.lists(st.sampled_from(Reason), unique=True), st.randoms())
def test_a_verdict_is_the_reasons_sorted_and_their_outcome_whatever_order_they_were_found_in(
    found: list[Reason], rng: random.Random
) -> None:
    want = Verdict(tuple(sorted(found, key=lambda reason: reason.value)), outcome_for(found))
    assert verdict_for(found) == want
    rng.shuffle(found)
    assert verdict_for(found) == want
    assert verdict_for(tuple(found)) == want


def _world():  # type: ignore[no-untyped-def]
    w = standard_world()
    w.patient(PEOPLE[0], date(1980, 1, 1), "TS18 1HU").registration(PEOPLE[0], "A81001", date(2015, 1, 1))
    w.patient(PEOPLE[1], date(1970, 5, 5), "YO1 7HH")
    w.registration(PEOPLE[2], "B82001", date(2019, 7, 10), date(2019, 7, 20))
    w.patient(PEOPLE[3], None, None)
    w.registration(PEOPLE[4], "A81003", date(2010, 1, 1)).registration(PEOPLE[4], "B82001", date(2019, 7, 15))
    return w


REFERENCE = _world().reference()

nhs_values = st.one_of(
    st.sampled_from(PEOPLE),
    st.sampled_from(PEOPLE).map(lambda n: f" {n[:3]} {n[3:6]} {n[6:]} "),
    st.sampled_from(PEOPLE).map(lambda n: f"{n[:3]}-{n[3:6]}-{n[6:]}"),
    st.sampled_from([None, "", "123", "999907980", "9990X17901", PEOPLE[0][:9] + "0"]),
)
dates = st.dates(min_value=date(2019, 6, 25), max_value=date(2019, 8, 5)).map(date.isoformat)
line_values = st.fixed_dictionaries(
    {
        "nhs_number": nhs_values,
        "date_of_birth": st.sampled_from([None, "1980-01-01", "1970-05-05", "1999-09-09", "XX"]),
        "postcode": st.sampled_from([None, "TS18 1HU", "ts181hu", "YO1 7HH", "ZZ9 9ZZ", "X"]),
        "service_code": st.sampled_from([None, "NCBPS13B", "ncbps13b", "NCBPS99Z"]),
        "point_of_delivery": st.sampled_from(["EL", "nel", "DC", "OPFU", "OPFA", "XX", None]),
        "hrg_code": st.sampled_from(["HN12A", "hn12a", "WF01A", "ZZ99Z", None]),
        "activity_date": st.one_of(dates, st.sampled_from([None, "n/a", "2019-02-30"])),
        "discharge_date": st.one_of(st.none(), dates),
        "amount": st.sampled_from(
            ["2874.30", "2874.3", "4105.54", "4720.92", "100.00", "100", "1", "XX", None, "-1"]
        ),
    }
)


@settings(max_examples=300)
@given(st.lists(line_values, min_size=1, max_size=8), st.sampled_from(["00K", "02Y", "X24"]))
def test_outcomes_are_consistent_with_their_reasons(
    lines: list[dict[str, str | None]], commissioner: str
) -> None:
    duplicates = InMemoryDuplicateIndex()
    invoice = header(commissioner_code=commissioner)
    raws = [raw_line(i + 1, line_ref=str(i + 1), **values) for i, values in enumerate(lines)]
    outcomes = run(REFERENCE, raws, invoice=invoice, duplicates=duplicates)
    counted = 0
    for outcome in outcomes:
        reasons = outcome.reasons
        assert list(reasons) == sorted(set(reasons))
        assert outcome.outcome is outcome_for(reasons)
        if Reason.MALFORMED_LINE in reasons:
            assert reasons == (Reason.MALFORMED_LINE,)
            assert outcome.expected_amount is None
            assert outcome.responsible_commissioner is None
            continue
        assert (outcome.expected_amount is None) is (Reason.TARIFF_NOT_FOUND in reasons)
        assert (Reason.PRICE_MISMATCH in reasons) is (
            outcome.expected_amount is not None and outcome.claimed_amount != outcome.expected_amount
        )
        if Reason.NHS_NUMBER_INVALID in reasons:
            assert outcome.responsible_commissioner is None
            assert not {Reason.PATIENT_NOT_FOUND, Reason.DOB_MISMATCH, Reason.RESIDENCE_UNKNOWN} & set(
                reasons
            )
        else:
            assert (outcome.responsible_commissioner is None) is (Reason.RESIDENCE_UNKNOWN in reasons)
            assert (Reason.NOT_RESPONSIBLE_COMMISSIONER in reasons) is (
                outcome.responsible_commissioner not in (None, commissioner)
            )
        if outcome.outcome is Outcome.REJECTED:
            assert outcome.duplicate_key is None
        else:
            assert outcome.duplicate_key is not None
            assert outcome.duplicate_key in duplicates
            counted += 1
    assert len(duplicates) == counted  # every non-rejected line added a new key, no rejected one did


@settings(max_examples=100)
@given(line_values, st.sampled_from(PEOPLE))
def test_the_nhs_number_form_never_changes_the_outcome(values: dict[str, str | None], person: str) -> None:
    forms = [
        person,
        f"{person[:3]} {person[3:6]} {person[6:]}",
        f"  {person[:3]}-{person[3:6]}-{person[6:]}\t",
    ]
    results = {run(REFERENCE, [raw_line(**{**values, "nhs_number": form})])[0] for form in forms}
    assert len(results) == 1
