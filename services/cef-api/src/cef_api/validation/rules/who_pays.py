"""Check 12's "Who Pays?" (v2 order; check 8 in v1): an ordered list of named rules; the first that
applies decides.

Decided on activity_date alone: the commissioner at the start of a spell keeps the whole spell.
Later rules (A&E and ambulance, the England-Wales cross-border protocol) are further WhoPaysRule
functions placed in WHO_PAYS_RULES where precedence puts them. Armed forces and prisoners need none:
their practices carry NHS England's codes (13Q, 13R) in the practice file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Final, TypeAlias

from cef_api.validation.rules.context import LineContext
from cef_api.validation.types import OriginatingCommissioner, Reason, Registration


@dataclass(frozen=True, slots=True)
class Undecided:
    """What a rule returns when it applies to the line but can name no commissioner: the later rules
    do not run, no commissioner is reported, and the line gets `reason`."""

    reason: Reason


# A rule returns the responsible commissioner's code, Undecided when it applies without naming one,
# or None to leave the decision to the next rule.
WhoPaysRule: TypeAlias = Callable[[LineContext], "str | Undecided | None"]

ORIGINATING_UNKNOWN: Final = Undecided(Reason.ORIGINATING_COMMISSIONER_UNKNOWN)


def specialised_service(ctx: LineContext) -> str | None:
    """A service_code on the specialised services list → that row's commissioner; unlisted codes: ignored."""
    service_code = ctx.line.service_code
    if service_code is None:
        return None
    return ctx.reference.specialised_commissioner(service_code)


def covering_originating_commissioner(ctx: LineContext) -> OriginatingCommissioner | None:
    """The originating commissioners row deciding a line with a care basis: among the patient's rows
    of that basis whose dates (inclusive, open `to`) cover activity_date, the latest `from`.

    Settled beyond the spec (the sample worlds hold no such tie): of two covering rows with the same
    latest `from`, the later `to` (open latest), then the greater commissioner code, so the answer
    never depends on storage order.
    """
    care_basis = ctx.line.care_basis
    activity_date = ctx.line.activity_date
    if care_basis is None or ctx.nhs_token is None or activity_date is None:
        return None
    best: OriginatingCommissioner | None = None
    for row in ctx.reference.originating_commissioners(ctx.nhs_token, care_basis):
        if row.valid_from > activity_date or (row.valid_to is not None and row.valid_to < activity_date):
            continue
        if best is None or _row_precedence(row) > _row_precedence(best):
            best = row
    return best


def _row_precedence(row: OriginatingCommissioner) -> tuple[date, date, str]:
    return (row.valid_from, row.valid_to or date.max, row.commissioner_code)


def originating_commissioner(ctx: LineContext) -> str | Undecided | None:
    """12.2 A line with a care basis (`S117` aftercare, `CHC` continuing healthcare) is the
    originating commissioner's, wherever the patient now lives or is registered: the covering row's
    commissioner (see covering_originating_commissioner). None covering (or no register loaded) →
    ORIGINATING_COMMISSIONER_UNKNOWN, and neither GP registration nor residence is consulted."""
    if ctx.line.care_basis is None:
        return None
    row = covering_originating_commissioner(ctx)
    return row.commissioner_code if row is not None else ORIGINATING_UNKNOWN


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


def residence_outward_code(ctx: LineContext) -> str | None:
    """The outward code of where the patient lives: the trace postcode's when the patient is in the
    trace (a blank trace postcode has none, and the line's postcode is then not consulted),
    otherwise the line postcode's."""
    return ctx.patient.outward_code if ctx.patient is not None else ctx.line.outward_code


def residence(ctx: LineContext) -> str | None:
    """The postcode district map at the outward code of where the patient lives (residence_outward_code)."""
    outward_code = residence_outward_code(ctx)
    if outward_code is None:
        return None
    return ctx.reference.district_commissioner(outward_code)


WHO_PAYS_RULES: Final[tuple[WhoPaysRule, ...]] = (
    specialised_service,
    originating_commissioner,
    gp_registration,
    residence,
)
# What LineContext.decided_by says of each rule (a rule not named here is known by its function name).
RULE_NAMES: Final[dict[WhoPaysRule, str]] = {
    specialised_service: "specialised",
    originating_commissioner: "originating",
    gp_registration: "registration",
    residence: "residence",
}


def decide_who_pays(ctx: LineContext, rules: tuple[WhoPaysRule, ...] = WHO_PAYS_RULES) -> Reason | None:
    """Runs the rules in order until one applies: sets `ctx.responsible_commissioner` (None when the
    rule returned Undecided) and `ctx.decided_by` (the rule's name; None when no rule applied), and
    returns the reason of an Undecided. Fills the context in place: one line, no allocation."""
    for rule in rules:
        found = rule(ctx)
        if found is None:
            continue
        ctx.decided_by = RULE_NAMES.get(rule) or getattr(rule, "__name__", "rule")
        if isinstance(found, Undecided):
            ctx.responsible_commissioner = None
            return found.reason
        ctx.responsible_commissioner = found
        return None
    ctx.responsible_commissioner = ctx.decided_by = None
    return None


def responsible_commissioner(ctx: LineContext, rules: tuple[WhoPaysRule, ...] = WHO_PAYS_RULES) -> str | None:
    """The commissioner the first rule that applies names, or None (no rule applies, or it names none)."""
    for rule in rules:
        found = rule(ctx)
        if found is not None:
            return found if isinstance(found, str) else None
    return None
