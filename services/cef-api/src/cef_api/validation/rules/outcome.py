"""The outcome of a line, derived from its reasons alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from cef_api.validation.types import Outcome, Reason

REJECTING: Final = frozenset(
    {
        Reason.MALFORMED_LINE,
        Reason.NHS_NUMBER_INVALID,
        Reason.ACTIVITY_OUTSIDE_PERIOD,
        Reason.NOT_RESPONSIBLE_COMMISSIONER,
        Reason.DUPLICATE_ACTIVITY,
    }
)
QUERYING: Final = frozenset(
    {
        Reason.TARIFF_NOT_FOUND,
        Reason.PRICE_MISMATCH,
        Reason.PATIENT_NOT_FOUND,
        Reason.DOB_MISMATCH,
        Reason.RESIDENCE_UNKNOWN,
    }
)


def outcome_for(reasons: Iterable[Reason]) -> Outcome:
    """rejected if any rejecting reason; else query if any querying reason; else valid."""
    found = frozenset(reasons)
    if not found:
        return Outcome.VALID
    if found & REJECTING:
        return Outcome.REJECTED
    if found & QUERYING:
        return Outcome.QUERY
    return Outcome.VALID
