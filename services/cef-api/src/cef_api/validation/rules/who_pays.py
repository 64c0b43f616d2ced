"""Check 8's "Who Pays?": an ordered list of named rules; the first to name a commissioner decides.

Decided on activity_date alone: the commissioner at the start of a spell keeps the whole spell.
Later rules (A&E and ambulance, Mental Health Act, continuing healthcare, armed forces, prisoners)
are further WhoPaysRule functions placed in WHO_PAYS_RULES where precedence puts them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Final, TypeAlias

from cef_api.validation.rules.context import LineContext
from cef_api.validation.types import Registration

# A rule returns the responsible commissioner's code, or None to leave the decision to the next rule.
WhoPaysRule: TypeAlias = Callable[[LineContext], str | None]


def specialised_service(ctx: LineContext) -> str | None:
    """A service_code on the specialised services list → that row's commissioner; unlisted codes: ignored."""
    service_code = ctx.line.service_code
    if service_code is None:
        return None
    return ctx.reference.specialised_commissioner(service_code)


def covering_registration(ctx: LineContext) -> tuple[Registration, str] | None:
    """The registration deciding responsibility, with its practice's commissioner.

    Among the patient's registrations (in the trace or not) that cover activity_date, from and to
    both inclusive, and whose practice is in the GP practice file with a commissioner (field 15;
    a practice that has since closed still counts): the latest registered_from. Settled beyond the
    spec: a practice in the file with a blank field 15 (e.g. Channel Islands) names no commissioner
    and is passed over like an unknown practice; two registrations starting the same day (a data
    error) are decided whatever order storage returns them in: the later registered_to (open-ended
    latest), then the greater practice code.
    """
    activity_date = ctx.line.activity_date
    if ctx.nhs_token is None or activity_date is None:
        return None
    reference = ctx.reference
    best: tuple[Registration, str] | None = None
    for registration in reference.registrations(ctx.nhs_token):
        if registration.registered_from > activity_date:
            continue
        if registration.registered_to is not None and registration.registered_to < activity_date:
            continue
        if best is not None and _precedence(registration) < _precedence(best[0]):
            continue
        commissioner = reference.practice_commissioner(registration.gp_practice_code)
        if commissioner is not None:
            best = (registration, commissioner)
    return best


def _precedence(registration: Registration) -> tuple[date, date, str]:
    return (
        registration.registered_from,
        registration.registered_to or date.max,
        registration.gp_practice_code,
    )


def gp_registration(ctx: LineContext) -> str | None:
    """The commissioner of the practice of the covering registration (see covering_registration)."""
    found = covering_registration(ctx)
    return found[1] if found is not None else None


def residence(ctx: LineContext) -> str | None:
    """The postcode district map at the outward code of where the patient lives.

    The trace postcode when the patient is in the trace (a blank trace postcode has none, and the
    line's postcode is then not consulted), otherwise the line's postcode.
    """
    outward_code = ctx.patient.outward_code if ctx.patient is not None else ctx.line.outward_code
    if outward_code is None:
        return None
    return ctx.reference.district_commissioner(outward_code)


WHO_PAYS_RULES: Final[tuple[WhoPaysRule, ...]] = (specialised_service, gp_registration, residence)


def responsible_commissioner(ctx: LineContext, rules: tuple[WhoPaysRule, ...] = WHO_PAYS_RULES) -> str | None:
    """The first commissioner a rule names, or None when no rule can decide."""
    for rule in rules:
        commissioner = rule(ctx)
        if commissioner is not None:
            return commissioner
    return None
