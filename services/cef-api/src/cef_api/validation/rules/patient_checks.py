"""Checks 6-9, run only when the NHS number is valid: trace, date of birth, who pays, duplicates."""

from __future__ import annotations

from cef_api.validation.rules.context import LineContext
from cef_api.validation.rules.who_pays import responsible_commissioner
from cef_api.validation.types import DuplicateKey, Reason


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
    """8. The responsible commissioner by "Who Pays?"; none → RESIDENCE_UNKNOWN; another than the
    invoice's commissioner_code (compared upper-cased) → NOT_RESPONSIBLE_COMMISSIONER."""
    commissioner = responsible_commissioner(ctx)
    ctx.responsible_commissioner = commissioner
    if commissioner is None:
        ctx.reasons.append(Reason.RESIDENCE_UNKNOWN)
    elif commissioner != ctx.header.commissioner_code.upper():
        ctx.reasons.append(Reason.NOT_RESPONSIBLE_COMMISSIONER)


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
