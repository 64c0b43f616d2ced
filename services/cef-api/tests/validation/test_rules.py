"""The rule units on their own: who-pays rules in order, and adding a rule is adding a unit."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from cef_api.validation.engine import prepare_line
from cef_api.validation.memory import InMemoryDuplicateIndex
from cef_api.validation.rules import (
    LINE_CHECKS,
    PATIENT_CHECKS,
    WHO_PAYS_RULES,
    LineContext,
    check_activity_period,
    check_nhs_number,
    responsible_commissioner,
)
from cef_api.validation.rules.who_pays import (
    gp_registration,
    originating_commissioner,
    residence,
    specialised_service,
)
from cef_api.validation.types import Reason

from .factories import fake_tokenise, header, nhs_numbers, raw_line, standard_world

PERSON = next(nhs_numbers(999_200_000))


def context(**values: str | None) -> LineContext:
    world = standard_world().patient(PERSON, None, "YO1 7HH").registration(PERSON, "B82001", date(2019, 1, 1))
    line = prepare_line(raw_line(**{"nhs_number": PERSON, **values}))
    reference = world.reference()
    token = fake_tokenise("nhs_number", PERSON) if line.nhs_number else None
    ctx = LineContext(line, header(), reference, InMemoryDuplicateIndex(), Decimal("1.139"), token, None)
    ctx.patient = reference.patient(token) if token else None
    return ctx


def test_who_pays_rules_run_in_the_spec_order() -> None:
    assert WHO_PAYS_RULES == (specialised_service, originating_commissioner, gp_registration, residence)
    assert [check.__name__ for check in LINE_CHECKS] == [
        "check_nhs_number",
        "check_activity_period",
        "check_tariff_and_price",
        "check_private_patient",
        "check_chargeable_overseas_visitor",
    ]
    assert [check.__name__ for check in PATIENT_CHECKS] == [
        "check_patient_found",
        "check_date_of_birth",
        "check_responsible_commissioner",
        "check_cross_border_resident",
        "check_prior_approval",
        "check_duplicate",
    ]


def test_each_who_pays_rule_alone() -> None:
    ctx = context(service_code="NCBPS13B")
    assert specialised_service(ctx) == "X24"
    assert gp_registration(ctx) == "02Y"
    assert residence(ctx) == "03Q"
    assert responsible_commissioner(ctx) == "X24"
    assert responsible_commissioner(context()) == "02Y"
    assert responsible_commissioner(context(), (residence,)) == "03Q"
    assert responsible_commissioner(context(), ()) is None


def test_a_new_rule_is_a_unit_placed_in_the_list() -> None:
    def armed_forces(ctx: LineContext) -> str | None:
        return "13Q" if ctx.line.service_code == "ARMED" else None

    rules = (specialised_service, armed_forces, *WHO_PAYS_RULES[2:])
    assert responsible_commissioner(context(service_code="ARMED"), rules) == "13Q"
    assert responsible_commissioner(context(), rules) == "02Y"


def test_line_checks_record_their_reason() -> None:
    ctx = context(nhs_number="123", activity_date="2019-08-01")
    check_nhs_number(ctx)
    check_activity_period(ctx)
    assert ctx.reasons == [Reason.NHS_NUMBER_INVALID, Reason.ACTIVITY_OUTSIDE_PERIOD]
