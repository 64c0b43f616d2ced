"""Checks 12 (originating commissioner in "Who Pays?"), 13 (CROSS_BORDER_RESIDENT) and 16
(PRIOR_APPROVAL_MISSING) on hand-made worlds, with properties where a rule is general."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cef_api.validation.engine import prepare_line
from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.rules import LineContext, check_responsible_commissioner
from cef_api.validation.rules.who_pays import decide_who_pays, responsible_commissioner
from cef_api.validation.types import LineOutcome, Outcome, Reason

from .factories import World, fake_tokenise, header, nhs_numbers, raw_line, run, standard_world

NUMBERS = nhs_numbers(999_300_000)
PERSON, OTHER = next(NUMBERS), next(NUMBERS)
DAY = date(2019, 7, 10)  # the default line's activity_date
V2_REASONS = {
    Reason.ORIGINATING_COMMISSIONER_UNKNOWN,
    Reason.CROSS_BORDER_RESIDENT,
    Reason.PRIOR_APPROVAL_MISSING,
}
# Amounts of the standard world's HN12A lines at RTR (MFF 1.139), so price never queries.
AMOUNTS = {"DC": "2874.30", "EL": "4105.54", "NEL": "4720.92"}


def registered_world() -> World:
    """PERSON: traced, living in TS18 (00K), registered with B82001 (02Y) since 2019."""
    return standard_world().patient(PERSON, None, "TS18 1HU").registration(PERSON, "B82001", date(2019, 1, 1))


def one(world: World, invoice_commissioner: str = "00K", **values: str | None) -> LineOutcome:
    pod = values.get("point_of_delivery") or "DC"
    line = {"nhs_number": PERSON, "point_of_delivery": pod, "amount": AMOUNTS[pod], **values}
    return run(world.reference(), [raw_line(**line)], invoice=header(commissioner_code=invoice_commissioner))[
        0
    ]


def context(world: World, **values: str | None) -> LineContext:
    line = prepare_line(raw_line(**{"nhs_number": PERSON, **values}))
    reference = world.reference()
    token = fake_tokenise("nhs_number", PERSON)
    ctx = LineContext(line, header(), reference, InMemoryDuplicateIndex(), Decimal("1.139"), token, None)
    ctx.patient = reference.patient(token)
    return ctx


# -- 12. originating commissioner -----------------------------------------------------------------


def test_a_care_basis_line_is_the_originating_commissioners_wherever_the_patient_is_registered() -> None:
    world = registered_world().originating(PERSON, "S117", "00K", date(2018, 6, 22))
    got = one(world, care_basis="s117")
    assert (got.outcome, got.reasons, got.responsible_commissioner) == (Outcome.VALID, (), "00K")
    # Without the care basis the same line is the registered practice's.
    got = one(world)
    assert got.responsible_commissioner == "02Y"
    assert got.reasons == (Reason.NOT_RESPONSIBLE_COMMISSIONER,)


def test_the_basis_must_match() -> None:
    world = registered_world().originating(PERSON, "S117", "00K", date(2018, 6, 22))
    got = one(world, care_basis="CHC")
    assert got.reasons == (Reason.ORIGINATING_COMMISSIONER_UNKNOWN,)
    assert (got.outcome, got.responsible_commissioner) == (Outcome.QUERY, None)


def test_unknown_originating_commissioner_stops_who_pays_but_not_the_other_checks() -> None:
    # Not registered and living nowhere mapped: v1 would say RESIDENCE_UNKNOWN; v2 stops before that.
    world = standard_world().patient(PERSON, None, "ZZ9 9ZZ")
    got = one(world, care_basis="S117", activity_date="2019-08-01")
    assert got.reasons == (Reason.ACTIVITY_OUTSIDE_PERIOD, Reason.ORIGINATING_COMMISSIONER_UNKNOWN)
    assert (got.outcome, got.responsible_commissioner) == (Outcome.REJECTED, None)
    # No register loaded at all: the same.
    assert one(registered_world(), care_basis="CHC").reasons == (Reason.ORIGINATING_COMMISSIONER_UNKNOWN,)


@pytest.mark.parametrize(
    ("activity", "decides"),
    [
        ("2019-07-01", "00M"),  # the first day of the row
        ("2019-07-20", "00M"),  # the last day
        ("2019-07-21", None),  # the day after: no covering row
        ("2019-06-30", None),  # the day before
    ],
)
def test_originating_rows_cover_their_dates_inclusively(activity: str, decides: str | None) -> None:
    world = registered_world().originating(PERSON, "CHC", "00M", date(2019, 7, 1), date(2019, 7, 20))
    w = header(period_start=date(2019, 6, 1), period_end=date(2019, 7, 31), commissioner_code="00M")
    got = run(
        world.reference(),
        [raw_line(nhs_number=PERSON, care_basis="CHC", activity_date=activity)],
        invoice=w,
    )[0]
    assert got.responsible_commissioner == decides
    assert (Reason.ORIGINATING_COMMISSIONER_UNKNOWN in got.reasons) is (decides is None)
    assert Reason.RESIDENCE_UNKNOWN not in got.reasons


def test_a_specialised_service_comes_before_the_originating_commissioner() -> None:
    world = registered_world().originating(PERSON, "S117", "00K", date(2018, 6, 22))
    got = one(world, "X24", care_basis="S117", service_code="NCBPS13B")
    assert (got.reasons, got.responsible_commissioner) == ((), "X24")
    got = one(world, "X24", care_basis="CHC", service_code="NCBPS13B")
    assert got.reasons == ()


def test_decided_by_names_the_rule() -> None:
    world = registered_world().originating(PERSON, "S117", "00K", date(2018, 6, 22))
    cases = [
        ({"service_code": "NCBPS13B"}, "specialised", "X24", None),
        ({"care_basis": "S117"}, "originating", "00K", None),
        ({"care_basis": "CHC"}, "originating", None, Reason.ORIGINATING_COMMISSIONER_UNKNOWN),
        ({}, "registration", "02Y", None),
    ]
    for values, decided_by, commissioner, reason in cases:
        ctx = context(world, **values)
        assert decide_who_pays(ctx) == reason
        assert (ctx.decided_by, ctx.responsible_commissioner) == (decided_by, commissioner)
        assert responsible_commissioner(ctx) == commissioner
    resident = context(standard_world().patient(PERSON, None, "YO1 7HH"))
    assert decide_who_pays(resident) is None
    assert (resident.decided_by, resident.responsible_commissioner) == ("residence", "03Q")
    nowhere = context(standard_world())
    check_responsible_commissioner(nowhere)
    assert (nowhere.decided_by, nowhere.reasons) == (None, [Reason.RESIDENCE_UNKNOWN])


periods = st.tuples(
    st.integers(min_value=-60, max_value=60),
    st.one_of(st.none(), st.integers(min_value=0, max_value=90)),
    st.sampled_from(["00K", "00M", "01H", "02Y"]),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(periods, max_size=5), offset=st.integers(min_value=-30, max_value=30))
def test_the_covering_row_with_the_latest_from_decides(
    rows: list[tuple[int, int | None, str]], offset: int
) -> None:
    # Distinct `from` dates: ties do not occur in the rule's worlds.
    seen: set[int] = set()
    rows = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]
    world = registered_world()
    base = date(2019, 7, 15)
    for start, length, commissioner in rows:
        end = None if length is None else base + timedelta(days=start + length)
        world.originating(PERSON, "S117", commissioner, base + timedelta(days=start), end)
    # A row of the other basis never counts.
    world.originating(PERSON, "CHC", "07K", base - timedelta(days=400))
    activity = base + timedelta(days=offset)
    covering = [
        (start, commissioner)
        for start, length, commissioner in rows
        if start <= offset and (length is None or offset <= start + length)
    ]
    want = max(covering)[1] if covering else None
    ctx = context(world, care_basis="S117", activity_date=activity.isoformat())
    check_responsible_commissioner(ctx)
    assert ctx.responsible_commissioner == want
    assert ctx.reasons == (
        [Reason.ORIGINATING_COMMISSIONER_UNKNOWN]
        if want is None
        else ([] if want == "00K" else [Reason.NOT_RESPONSIBLE_COMMISSIONER])
    )


# -- 13. CROSS_BORDER_RESIDENT ----------------------------------------------------------------------


def test_registered_in_england_living_in_wales_is_a_query_with_the_commissioner_reported() -> None:
    world = (
        standard_world()
        .devolved("CF10", "W")
        .patient(PERSON, None, "cf10 1aa")
        .registration(PERSON, "A81001", date(2019, 1, 1))
    )
    got = one(world)
    assert (got.outcome, got.reasons, got.responsible_commissioner) == (
        Outcome.QUERY,
        (Reason.CROSS_BORDER_RESIDENT,),
        "00K",
    )
    # NOT_RESPONSIBLE_COMMISSIONER still applies beside it.
    got = one(world, "02Y")
    assert got.reasons == (Reason.CROSS_BORDER_RESIDENT, Reason.NOT_RESPONSIBLE_COMMISSIONER)
    assert got.outcome is Outcome.REJECTED


def test_residence_is_the_trace_postcode_or_else_the_lines() -> None:
    base = standard_world().devolved("EH1", "S").registration(PERSON, "A81001", date(2019, 1, 1))
    # Not in the trace: the line's postcode.
    assert Reason.CROSS_BORDER_RESIDENT in one(base, postcode="EH1 1AA").reasons
    assert Reason.CROSS_BORDER_RESIDENT not in one(base, postcode="TS18 1HU").reasons
    # In the trace with an English postcode: the line's Scottish postcode does not count.
    traced = standard_world().devolved("EH1", "S").patient(PERSON, None, "TS18 1HU")
    traced.registration(PERSON, "A81001", date(2019, 1, 1))
    assert Reason.CROSS_BORDER_RESIDENT not in one(traced, postcode="EH1 1AA").reasons
    # In the trace with no postcode: none, whatever the line says.
    blank = standard_world().devolved("EH1", "S").patient(PERSON, None, None)
    blank.registration(PERSON, "A81001", date(2019, 1, 1))
    assert Reason.CROSS_BORDER_RESIDENT not in one(blank, postcode="EH1 1AA").reasons


def test_only_a_commissioner_decided_by_registration_is_cross_border() -> None:
    world = (
        standard_world()
        .devolved("BT1", "N")
        .patient(PERSON, None, "BT1 1AA")
        .originating(PERSON, "S117", "00K", date(2019, 1, 1))
    )
    # Unregistered: residence decides nothing (BT1 is in no district map) → RESIDENCE_UNKNOWN only.
    assert one(world).reasons == (Reason.RESIDENCE_UNKNOWN,)
    # Originating commissioner and specialised service: not cross-border either.
    assert one(world, care_basis="S117").reasons == ()
    assert one(world, "X24", service_code="NCBPS13B").reasons == ()
    # Registered, even with a practice whose commissioner is Welsh: cross-border.
    world.practice("W91001", "7A1").registration(PERSON, "W91001", date(2019, 1, 1))
    assert one(world, "7A1").reasons == (Reason.CROSS_BORDER_RESIDENT,)


# -- 16. PRIOR_APPROVAL_MISSING ----------------------------------------------------------------------


def approval_world() -> World:
    """PERSON is 00K's (registered with A81001); RTR invoices 00K."""
    return standard_world().patient(PERSON, None, "TS18 1HU").registration(PERSON, "A81001", date(2019, 1, 1))


def test_without_a_contracts_dataset_no_approval_is_needed() -> None:
    assert one(approval_world()).reasons == ()


def test_a_contract_covering_the_admission_needs_no_approval() -> None:
    world = approval_world().contract("00K", "RTR", date(2019, 4, 1), DAY)
    assert one(world).reasons == ()
    # Renewal: one contract ends the day before the next begins.
    renewed = approval_world().contract("00K", "RTR", date(2019, 4, 1), date(2019, 7, 9))
    renewed.contract("00K", "RTR", DAY)
    assert one(renewed).reasons == ()
    # Ended the day before: non-contract.
    ended = approval_world().contract("00K", "RTR", date(2019, 4, 1), date(2019, 7, 9))
    assert one(ended).reasons == (Reason.PRIOR_APPROVAL_MISSING,)
    # Another provider's or another commissioner's contract does not count.
    others = (
        approval_world().contract("00K", "RVW", date(2019, 4, 1)).contract("02Y", "RTR", date(2019, 4, 1))
    )
    assert one(others).reasons == (Reason.PRIOR_APPROVAL_MISSING,)


def test_the_admission_date_decides_not_the_discharge() -> None:
    world = approval_world().contract("00K", "RTR", date(2019, 4, 1), DAY)
    got = one(world, point_of_delivery="EL", discharge_date="2019-07-12")
    assert got.reasons == ()


def test_non_contract_activity_needs_a_matching_approval() -> None:
    world = approval_world().contracts_loaded()
    world.approval("00K", "PA-00K-2019-0042", PERSON, date(2019, 7, 1), DAY)
    world.approval("02Y", "PA-02Y-2019-0001", PERSON, date(2019, 7, 1), date(2019, 7, 31))
    world.approval("00K", "PA-00K-2019-0043", OTHER, date(2019, 7, 1), date(2019, 7, 31))
    assert one(world, prior_approval_ref="PA-00K-2019-0042").reasons == ()
    assert one(world, prior_approval_ref="pa-00k-2019-0042").reasons == ()  # any case
    missing = (Reason.PRIOR_APPROVAL_MISSING,)
    assert one(world).reasons == missing  # no reference given
    assert one(world, prior_approval_ref="PA-00K-2019-0041").reasons == missing  # another reference
    assert one(world, prior_approval_ref="PA-02Y-2019-0001").reasons == missing  # another commissioner's
    assert one(world, prior_approval_ref="PA-00K-2019-0043").reasons == missing  # another patient's
    # The window, both ends inclusive: the day after valid_to misses.
    assert one(world, prior_approval_ref="PA-00K-2019-0042", activity_date="2019-07-01").reasons == ()
    assert one(world, prior_approval_ref="PA-00K-2019-0042", activity_date="2019-07-11").reasons == missing


def test_emergencies_never_need_approval() -> None:
    world = approval_world().contracts_loaded()
    assert one(world, point_of_delivery="NEL").reasons == ()
    assert one(world, point_of_delivery="EL").reasons == (Reason.PRIOR_APPROVAL_MISSING,)


def test_only_lines_of_the_invoices_own_commissioner_are_checked() -> None:
    world = approval_world().contracts_loaded()
    # Responsible 00K, invoiced to 02Y: rejected for that alone.
    assert one(world, "02Y").reasons == (Reason.NOT_RESPONSIBLE_COMMISSIONER,)
    # No commissioner found: nothing to check against.
    nobody = standard_world().patient(PERSON, None, "ZZ9 9ZZ").contracts_loaded()
    assert one(nobody).reasons == (Reason.RESIDENCE_UNKNOWN,)
    assert one(nobody, care_basis="CHC").reasons == (Reason.ORIGINATING_COMMISSIONER_UNKNOWN,)
    # The commissioner may come from any rule: here the originating one.
    placed = nobody.originating(PERSON, "CHC", "00K", date(2019, 1, 1))
    assert one(placed, care_basis="CHC").reasons == (Reason.PRIOR_APPROVAL_MISSING,)


def test_a_v2_reason_stands_beside_a_rejection() -> None:
    world = approval_world().contracts_loaded()
    got = one(world, activity_date="2019-08-01")
    assert got.reasons == (Reason.ACTIVITY_OUTSIDE_PERIOD, Reason.PRIOR_APPROVAL_MISSING)


@settings(max_examples=100, deadline=None)
@given(
    pod=st.sampled_from(["EL", "NEL", "DC", "OPFA", "OPFU"]),
    registered_with=st.sampled_from(["A81001", "B82001"]),
    invoiced_to=st.sampled_from(["00K", "02Y"]),
    reference=st.one_of(st.none(), st.text("PA-0123456789", min_size=1, max_size=12)),
)
def test_a_contracts_dataset_with_no_rows_makes_activity_without_approval_a_query(
    pod: str, registered_with: str, invoiced_to: str, reference: str | None
) -> None:
    world = (
        standard_world()
        .price("WF01A", "OPFA", "100.00")
        .patient(PERSON, None, "TS18 1HU")
        .registration(PERSON, registered_with, date(2019, 1, 1))
        .contracts_loaded()
    )
    hrg = "WF01A" if pod.startswith("OP") else "HN12A"
    amount = "113.90" if pod.startswith("OP") else AMOUNTS[pod]
    got = run(
        world.reference(),
        [
            raw_line(
                nhs_number=PERSON,
                point_of_delivery=pod,
                hrg_code=hrg,
                amount=amount,
                prior_approval_ref=reference,
            )
        ],
        invoice=header(commissioner_code=invoiced_to),
    )[0]
    responsible = "00K" if registered_with == "A81001" else "02Y"
    needs_approval = responsible == invoiced_to and pod != "NEL"
    assert (Reason.PRIOR_APPROVAL_MISSING in got.reasons) is needs_approval
    assert got.reasons == tuple(
        sorted(
            ([Reason.PRIOR_APPROVAL_MISSING] if needs_approval else [])
            + ([] if responsible == invoiced_to else [Reason.NOT_RESPONSIBLE_COMMISSIONER])
        )
    )


@settings(max_examples=100, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {
            "point_of_delivery": st.sampled_from(["EL", "NEL", "DC"]),
            "postcode": st.sampled_from([None, "TS18 1HU", "YO1 7HH", "CF10 1AA", "ZZ9 9ZZ"]),
            "service_code": st.sampled_from([None, "NCBPS13B", "OTHER"]),
            "activity_date": st.sampled_from(["2019-06-30", "2019-07-01", "2019-07-31"]),
        }
    ),
    traced=st.booleans(),
    registered=st.booleans(),
)
def test_a_world_without_the_v2_datasets_gets_no_v2_reason(
    values: dict[str, str | None], traced: bool, registered: bool
) -> None:
    world = standard_world()
    if traced:
        world.patient(PERSON, None, "CF10 1AA")
    if registered:
        world.registration(PERSON, "A81001", date(2019, 1, 1))
    got = one(world, **values)
    assert not set(got.reasons) & V2_REASONS
