"""The outcome of a line, derived from its reasons alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cef_api.validation.types import Outcome, Reason

REJECTING: Final = frozenset(
    {
        Reason.MALFORMED_LINE,
        Reason.NHS_NUMBER_INVALID,
        Reason.ACTIVITY_OUTSIDE_PERIOD,
        Reason.NOT_RESPONSIBLE_COMMISSIONER,
        Reason.DUPLICATE_ACTIVITY,
        Reason.PRIVATE_PATIENT,
        Reason.CHARGEABLE_OVERSEAS_VISITOR,
    }
)
QUERYING: Final = frozenset(
    {
        Reason.TARIFF_NOT_FOUND,
        Reason.PRICE_MISMATCH,
        Reason.PATIENT_NOT_FOUND,
        Reason.DOB_MISMATCH,
        Reason.RESIDENCE_UNKNOWN,
        Reason.ORIGINATING_COMMISSIONER_UNKNOWN,
        Reason.CROSS_BORDER_RESIDENT,
        Reason.OVERLAPPING_SPELL,
        Reason.ATTENDANCE_DURING_SPELL,
        Reason.PRIOR_APPROVAL_MISSING,
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


@dataclass(frozen=True, slots=True)
class Verdict:
    """A line's reasons sorted by value (LineOutcome's order) and the outcome they give."""

    reasons: tuple[Reason, ...]
    outcome: Outcome


# Found reasons → their Verdict. Bounded without a limit: each check records at most one reason, in
# the fixed order the checks run, so a few hundred combinations can occur; reasons identify no one.
_VERDICTS: dict[tuple[Reason, ...], Verdict] = {}


def verdict_for(found: Sequence[Reason]) -> Verdict:
    """The Verdict of the reasons the checks found, in the order they found them. Made once per
    combination: lines repeat a few, and sorting and deriving afresh on every line was a measurable
    part of validating it."""
    key = tuple(found)
    verdict = _VERDICTS.get(key)
    if verdict is None:
        reasons = tuple(sorted(key))
        verdict = _VERDICTS[key] = Verdict(reasons, outcome_for(reasons))
    return verdict
