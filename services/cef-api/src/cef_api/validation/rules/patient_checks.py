"""Checks 6-9, 12, 13 and 16, run only when the NHS number is valid: trace, date of birth, who pays
(and what follows from who pays: cross-border residents, prior approvals), duplicates."""

from __future__ import annotations

from typing import Final

from cef_api.validation.rules.context import LineContext
from cef_api.validation.rules.who_pays import (
    RULE_NAMES,
    decide_who_pays,
    gp_registration,
    residence_outward_code,
)
from cef_api.validation.types import DuplicateKey, Reason

DECIDED_BY_REGISTRATION: Final = RULE_NAMES[gp_registration]
# Emergencies need no prior approval, whatever the line says.
EMERGENCY_POINT_OF_DELIVERY: Final = "NEL"


def check_patient_found(ctx: LineContext) -> None:
    """6. PATIENT_NOT_FOUND: the NHS number is not in the patient trace."""
    if ctx.patient is None:
        ctx.reasons.append(Reason.PATIENT_NOT_FOUND)


def check_date_of_birth(ctx: LineContext) -> None:
    """7. DOB_MISMATCH: the patient is in the trace, the line has a date of birth, and the two differ.

    Compared as tokens. Settled beyond the spec: a trace entry without a date of birth differs from
    any date the line gives.
    """
    if ctx.patient is not None and ctx.line.date_of_birth is not None:
        if ctx.dob_token is None or ctx.dob_token != ctx.patient.dob_token:
            ctx.reasons.append(Reason.DOB_MISMATCH)


def check_responsible_commissioner(ctx: LineContext) -> None:
    """12 (v2; 8 in v1). The responsible commissioner by "Who Pays?" (who_pays.WHO_PAYS_RULES); a rule
    that applies without naming one gives its reason (ORIGINATING_COMMISSIONER_UNKNOWN); no rule
    applying → RESIDENCE_UNKNOWN; another than the invoice's commissioner_code (compared upper-cased)
    → NOT_RESPONSIBLE_COMMISSIONER. Records the commissioner and the deciding rule on the context."""
    undecided = decide_who_pays(ctx)
    commissioner = ctx.responsible_commissioner
    if undecided is not None:
        ctx.reasons.append(undecided)
    elif commissioner is None:
        ctx.reasons.append(Reason.RESIDENCE_UNKNOWN)
    elif commissioner != ctx.header.commissioner_code.upper():
        ctx.reasons.append(Reason.NOT_RESPONSIBLE_COMMISSIONER)


def check_cross_border_resident(ctx: LineContext) -> None:
    """13. CROSS_BORDER_RESIDENT: the commissioner was decided by GP registration and the patient
    lives outside England (the residence outward code, as the residence rule reads it, is in the
    devolved districts), whatever nation the practice is in. Runs after check 12."""
    if ctx.decided_by != DECIDED_BY_REGISTRATION:
        return
    outward_code = residence_outward_code(ctx)
    if outward_code is not None and ctx.reference.devolved_nation(outward_code) is not None:
        ctx.reasons.append(Reason.CROSS_BORDER_RESIDENT)


def check_prior_approval(ctx: LineContext) -> None:
    """16. PRIOR_APPROVAL_MISSING: non-contract activity without a matching prior approval. Runs after
    check 12, only when a contracts dataset is loaded (even one with no rows) and the responsible
    commissioner is the invoice's.

    Non-contract: no contract of (that commissioner, the invoice provider) covers activity_date (the
    admission, not the whole spell). Then, unless the point of delivery is NEL, the line needs a
    prior_approval_ref matching an approval of that commissioner, with that reference (compared
    upper-cased), for that patient, valid on activity_date (inclusive).
    """
    commissioner = ctx.responsible_commissioner
    activity_date = ctx.line.activity_date
    reference = ctx.reference
    if (
        commissioner is None
        or activity_date is None
        or ctx.nhs_token is None
        or not reference.contracts_loaded()
        or commissioner != ctx.header.commissioner_code.upper()
        or reference.contract_covers(commissioner, ctx.header.provider_code.upper(), activity_date)
        or ctx.line.point_of_delivery == EMERGENCY_POINT_OF_DELIVERY
    ):
        return
    approval_ref = ctx.line.prior_approval_ref
    if approval_ref is None or not reference.prior_approval(
        commissioner, approval_ref.upper(), ctx.nhs_token, activity_date
    ):
        ctx.reasons.append(Reason.PRIOR_APPROVAL_MISSING)


def check_duplicate(ctx: LineContext) -> None:
    """9. DUPLICATE_ACTIVITY: an earlier line not rejected has the same key.

    Key: invoice provider_code and commissioner_code (upper-cased), NHS number (as its token),
    activity_date, hrg_code, point_of_delivery. The engine adds the key to the index only when this
    line's outcome is not rejected, so a rejected line never makes later lines duplicates.
    """
    line = ctx.line
    if (
        ctx.nhs_token is None
        or line.activity_date is None
        or line.hrg_code is None
        or line.point_of_delivery is None
    ):
        return
    key = DuplicateKey(
        ctx.header.provider_code.upper(),
        ctx.header.commissioner_code.upper(),
        ctx.nhs_token,
        line.activity_date,
        line.hrg_code,
        line.point_of_delivery,
    )
    ctx.duplicate_key = key
    if key in ctx.duplicates:
        ctx.reasons.append(Reason.DUPLICATE_ACTIVITY)
