"""Checks 10-11, run on every line that is not malformed: activity the NHS does not pay for."""

from __future__ import annotations

from cef_api.validation.rules.context import LineContext
from cef_api.validation.types import Reason
from cef_api.validation.values import CHARGEABLE_OVERSEAS_VISITOR_STATUSES, PRIVATE_PATIENT_CATEGORY


def check_private_patient(ctx: LineContext) -> None:
    """10. PRIVATE_PATIENT: `administrative_category` is `02` (a private patient pays for their own care)."""
    if ctx.line.administrative_category == PRIVATE_PATIENT_CATEGORY:
        ctx.reasons.append(Reason.PRIVATE_PATIENT)


def check_chargeable_overseas_visitor(ctx: LineContext) -> None:
    """11. CHARGEABLE_OVERSEAS_VISITOR: `overseas_visitor_status` is `2`, `3` or `4` (the visitor is
    charged for the care, so no commissioner pays for it)."""
    if ctx.line.overseas_visitor_status in CHARGEABLE_OVERSEAS_VISITOR_STATUSES:
        ctx.reasons.append(Reason.CHARGEABLE_OVERSEAS_VISITOR)
