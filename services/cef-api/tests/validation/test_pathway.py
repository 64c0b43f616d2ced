"""Checks 14 (OVERLAPPING_SPELL) and 15 (ATTENDANCE_DURING_SPELL) as units, and the batched
settlement that decides them line by line in order: properties over generated spells and examples
from validation-rules.md."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cef_api.invoices.batches import AssessedBatch, count_batch, settle_batch
from cef_api.invoices.repository import LINE_COLUMNS
from cef_api.validation.engine import SummaryAccumulator, prepare_line
from cef_api.validation.rules.pathway import (
    InMemorySpellIndex,
    check_attendance_during_spell,
    check_overlapping_spell,
    decide_pathway_line,
    nights,
    pathway_fact,
    pathway_reason,
)
from cef_api.validation.types import Reason

from .factories import raw_line

VALID_NHS = "9434765919"
DAY0 = date(2019, 4, 1)

days = st.integers(min_value=0, max_value=60).map(lambda n: DAY0 + timedelta(days=n))
lengths = st.integers(min_value=1, max_value=30)


@st.composite
def spells(draw: st.DrawFn) -> tuple[date, date]:
    admission = draw(days)
    return admission, admission + timedelta(days=draw(lengths))


def _night_set(spell: tuple[date, date]) -> set[date]:
    return set(nights(*spell))


# --- the units ---------------------------------------------------------------------------------


@given(spells(), spells())
def test_spells_overlap_exactly_when_they_share_a_night(a: tuple[date, date], b: tuple[date, date]) -> None:
    shared = bool(_night_set(a) & _night_set(b))
    assert check_overlapping_spell(*b, [a]) is shared
    assert check_overlapping_spell(*a, [b]) is shared


@given(spells(), lengths)
def test_back_to_back_spells_never_overlap(first: tuple[date, date], length: int) -> None:
    following = (first[1], first[1] + timedelta(days=length))
    assert not check_overlapping_spell(*following, [first])
    assert not check_overlapping_spell(*first, [following])


@given(days)
def test_a_spell_discharged_on_its_admission_day_has_no_nights(day: date) -> None:
    assert list(nights(day, day)) == []
    for point_of_delivery in ("EL", "NEL"):
        line = prepare_line(
            raw_line(
                nhs_number=VALID_NHS,
                point_of_delivery=point_of_delivery,
                activity_date=day.isoformat(),
                discharge_date=day.isoformat(),
            )
        )
        assert pathway_fact(line, "N1.token") is None


@given(spells(), days)
def test_an_attendance_is_during_a_spell_only_strictly_inside_it(spell: tuple[date, date], day: date) -> None:
    assert check_attendance_during_spell(day, [spell]) is (spell[0] < day < spell[1])
    assert not check_attendance_during_spell(spell[0], [spell])
    assert not check_attendance_during_spell(spell[1], [spell])


@given(st.lists(spells(), max_size=6), spells())
def test_a_reason_needs_one_earlier_spell_that_meets_the_line(
    earlier: list[tuple[date, date]], spell: tuple[date, date]
) -> None:
    fact = ("N1.p", spell[0], spell[1])
    expected = Reason.OVERLAPPING_SPELL if any(_night_set(e) & _night_set(spell) for e in earlier) else None
    assert pathway_reason(fact, earlier) is expected


@pytest.mark.parametrize(
    ("point_of_delivery", "discharge", "expected"),
    [
        ("EL", "2019-04-12", ("N1.p", date(2019, 4, 10), date(2019, 4, 12))),
        ("NEL", "2019-04-11", ("N1.p", date(2019, 4, 10), date(2019, 4, 11))),
        ("EL", None, None),  # a spell without a discharge date has no nights
        ("NEL", "2019-04-10", None),
        ("OPFA", None, ("N1.p", date(2019, 4, 10), None)),
        ("OPFU", None, ("N1.p", date(2019, 4, 10), None)),
        ("DC", "2019-04-10", ("N1.p", date(2019, 4, 10), None)),  # an attendance whatever its discharge
    ],
)
def test_what_a_line_brings_to_the_pathway_checks(
    point_of_delivery: str, discharge: str | None, expected: tuple[str, date, date | None] | None
) -> None:
    line = prepare_line(
        raw_line(
            nhs_number=VALID_NHS,
            point_of_delivery=point_of_delivery,
            activity_date="2019-04-10",
            discharge_date=discharge,
        )
    )
    assert pathway_fact(line, "N1.p") == expected


def test_lines_without_a_valid_nhs_number_or_malformed_bring_nothing() -> None:
    invalid = prepare_line(raw_line(nhs_number="9434765918", point_of_delivery="OPFU"))
    malformed = prepare_line(raw_line(nhs_number=VALID_NHS, point_of_delivery="OPFU", amount="£5"))
    assert invalid.nhs_number is None
    assert pathway_fact(invalid, None) is None
    assert malformed.malformed
    assert pathway_fact(malformed, "N1.p") is None


@given(spells(), spells())
def test_order_matters_only_the_later_is_flagged(a: tuple[date, date], b: tuple[date, date]) -> None:
    index = InMemorySpellIndex()
    first = decide_pathway_line(("N1.p", *a), commissioner_code="00K", rejected=False, spells=index)
    second = decide_pathway_line(("N1.p", *b), commissioner_code="00K", rejected=False, spells=index)
    assert first is None
    assert (second is Reason.OVERLAPPING_SPELL) is bool(_night_set(a) & _night_set(b))


@given(spells(), days)
def test_an_attendance_before_the_spell_that_contains_it_is_not_flagged(
    spell: tuple[date, date], day: date
) -> None:
    index = InMemorySpellIndex()
    assert (
        decide_pathway_line(("N1.p", day, None), commissioner_code="00K", rejected=False, spells=index)
        is None
    )
    decide_pathway_line(("N1.p", *spell), commissioner_code="00K", rejected=False, spells=index)
    later = decide_pathway_line(("N1.p", day, None), commissioner_code="00K", rejected=False, spells=index)
    assert (later is Reason.ATTENDANCE_DURING_SPELL) is (spell[0] < day < spell[1])


@given(spells())
def test_rejected_lines_are_checked_but_never_count(spell: tuple[date, date]) -> None:
    index = InMemorySpellIndex()
    assert decide_pathway_line(("N1.p", *spell), commissioner_code="00K", rejected=True, spells=index) is None
    assert len(index) == 0
    decide_pathway_line(("N1.p", *spell), commissioner_code="00K", rejected=False, spells=index)
    again = decide_pathway_line(("N1.p", *spell), commissioner_code="00K", rejected=True, spells=index)
    assert again is Reason.OVERLAPPING_SPELL  # a rejected line still gets the reason beside its own
    assert len(index) == 1


@given(spells())
def test_other_patients_and_other_commissioners_never_count(spell: tuple[date, date]) -> None:
    index = InMemorySpellIndex()
    decide_pathway_line(("N1.p", *spell), commissioner_code="00k", rejected=False, spells=index)
    assert (
        decide_pathway_line(("N1.q", *spell), commissioner_code="00K", rejected=False, spells=index) is None
    )
    assert (
        decide_pathway_line(("N1.p", *spell), commissioner_code="02Y", rejected=False, spells=index) is None
    )
    # The commissioner compares upper-cased, as check 9's key does.
    assert (
        decide_pathway_line(("N1.p", *spell), commissioner_code="00K", rejected=False, spells=index)
        is Reason.OVERLAPPING_SPELL
    )


# --- settlement of a batch ---------------------------------------------------------------------

_COL = {name: i for i, name in enumerate(LINE_COLUMNS)}


def _batch(rows: list[dict[str, object]]) -> AssessedBatch:
    """An assessed batch as assess_batch leaves it, built by hand: each row's outcome, reasons,
    amount and pathway fact; no duplicate candidates."""
    columns: list[list[object]] = [[None] * len(rows) for _ in LINE_COLUMNS]
    pathway = []
    for index, row in enumerate(rows):
        columns[_COL["invoice_seq"]][index] = 7
        columns[_COL["line_no"]][index] = index + 1
        columns[_COL["outcome"]][index] = row["outcome"]
        columns[_COL["reasons"]][index] = row.get("reasons", "")
        columns[_COL["claimed_pennies"]][index] = row.get("pennies", 100)
        if row.get("fact") is not None:
            pathway.append((index, *row["fact"]))  # type: ignore[misc]
    return AssessedBatch(columns, [None] * len(rows), {}, pathway)  # type: ignore[arg-type]


def test_settlement_flags_in_line_order_and_recounts_the_summary() -> None:
    spell = ("N1.p", date(2019, 4, 10), date(2019, 4, 15))
    batch = _batch(
        [
            {"outcome": "valid", "fact": spell, "pennies": 1000},
            {"outcome": "valid", "fact": ("N1.p", date(2019, 4, 12), None), "pennies": 200},
            {
                "outcome": "query",
                "reasons": "PRICE_MISMATCH",
                "fact": ("N1.p", date(2019, 4, 14), date(2019, 4, 16)),
            },
            {
                "outcome": "rejected",
                "reasons": "ACTIVITY_OUTSIDE_PERIOD",
                "fact": ("N1.q", date(2019, 4, 1), date(2019, 4, 9)),
            },
            {"outcome": "valid", "fact": ("N1.q", date(2019, 4, 2), date(2019, 4, 4)), "pennies": 300},
            # The discharge day of the spell above: not during it.
            {"outcome": "valid", "fact": ("N1.p", date(2019, 4, 16), None), "pennies": 400},
        ]
    )
    summary = SummaryAccumulator()
    settle_batch(batch, keys=set(), commissioner_code="00k", spells=InMemorySpellIndex(), summary=summary)
    outcomes = batch.columns[_COL["outcome"]]
    reasons = batch.columns[_COL["reasons"]]
    assert outcomes == ["valid", "query", "query", "rejected", "valid", "valid"]
    assert reasons == [
        "",
        "ATTENDANCE_DURING_SPELL",
        "OVERLAPPING_SPELL;PRICE_MISMATCH",
        "ACTIVITY_OUTSIDE_PERIOD",
        "",
        "",
    ]
    # Stored: the spells of lines not rejected, under the upper-cased commissioner.
    assert [(r[1], r[2], r[4], r[5]) for r in batch.spell_rows] == [
        (1, "00K", "2019-04-10", "2019-04-15"),
        (3, "00K", "2019-04-14", "2019-04-16"),
        (5, "00K", "2019-04-02", "2019-04-04"),
    ]
    result = summary.result()
    assert (result.lines, result.valid, result.query, result.rejected) == (6, 3, 2, 1)
    assert str(result.validated_amount) == "17.00"  # 10.00 + 3.00 + 4.00


def test_a_line_rejected_as_a_duplicate_is_no_earlier_spell() -> None:
    spell = ("N1.p", date(2019, 4, 10), date(2019, 4, 15))
    batch = _batch([{"outcome": "valid", "fact": spell}, {"outcome": "valid", "fact": spell}])
    batch.candidates = ["k", "k"]
    settle_batch(
        batch, keys={"k"}, commissioner_code="00K", spells=InMemorySpellIndex(), summary=SummaryAccumulator()
    )
    # Both duplicate an earlier invoice's line: rejected, so neither counts as a spell for the other.
    assert batch.columns[_COL["reasons"]] == ["DUPLICATE_ACTIVITY", "DUPLICATE_ACTIVITY"]
    assert batch.spell_rows == []


def test_counting_a_batch_twice_is_the_callers_choice() -> None:
    batch = _batch([{"outcome": "valid"}])
    summary = SummaryAccumulator()
    count_batch(batch, summary)
    assert summary.result().lines == 1
