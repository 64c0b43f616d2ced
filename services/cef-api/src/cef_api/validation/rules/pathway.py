"""Checks 14 and 15, the pathway checks: a line against the earlier spells of the same patient
billed to the same commissioner (any provider), decided one line at a time in submission order.

Unlike checks 2-13 these need earlier lines, so they do not run in `check_line`: a caller that
walks lines in order (`invoices.batches.settle_pathway`, or an in-memory replay) asks
`decide_pathway_line` of each line, after check 9, with a `SpellIndex` of the earlier countable
spells. A line brings a `PathwayFact` to them, or None when neither check concerns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from cef_api.validation.types import Reason
from cef_api.validation.values import SPELL_POINTS_OF_DELIVERY

if TYPE_CHECKING:
    from cef_api.validation.prepared import PreparedLine

ATTENDANCE_POINTS_OF_DELIVERY: Final = frozenset({"OPFA", "OPFU", "DC"})

# (admission, discharge) of a spell with at least one night: admission < discharge.
Spell: TypeAlias = tuple[date, date]
# (patient token, activity_date, discharge_date): a spell with nights when the discharge is set,
# an attendance (OPFA, OPFU, DC) when it is None. Tuples: they cross between processes cheaply.
PathwayFact: TypeAlias = tuple[str, date, date | None]


def nights(admission: date, discharge: date) -> Iterator[date]:
    """The nights of a spell: the dates `admission <= d < discharge` (none when discharged the day
    it was admitted)."""
    day = admission
    while day < discharge:
        yield day
        day += timedelta(days=1)


def pathway_fact(line: PreparedLine, nhs_token: str | None) -> PathwayFact | None:
    """What a line brings to checks 14 and 15: a patient check, so only a well-formed line with a
    valid NHS number; a spell (EL, NEL) only when it has a discharge date and so at least one night;
    an attendance (OPFA, OPFU, DC) whatever its discharge date. None: neither check concerns it, and
    it can never be the earlier line of either (a spell without nights contains no date strictly
    inside it)."""
    if line.malformed or line.nhs_number is None or nhs_token is None or line.activity_date is None:
        return None
    point_of_delivery = line.point_of_delivery
    if point_of_delivery in SPELL_POINTS_OF_DELIVERY:
        discharge = line.discharge_date
        if discharge is None or discharge <= line.activity_date:
            return None
        return (nhs_token, line.activity_date, discharge)
    if point_of_delivery in ATTENDANCE_POINTS_OF_DELIVERY:
        return (nhs_token, line.activity_date, None)
    return None


def check_overlapping_spell(admission: date, discharge: date, earlier: Iterable[Spell]) -> bool:
    """14. OVERLAPPING_SPELL: an earlier spell shares at least one night with this one. The nights
    `[a, d)` and `[a', d')`, both non-empty, meet exactly when `a < d'` and `a' < d`: so back-to-back
    spells (one discharged the day the other is admitted) never overlap."""
    # A loop rather than any(generator): a batch settles tens of thousands of lines in one process.
    for other_admission, other_discharge in earlier:
        if admission < other_discharge and other_admission < discharge:
            return True
    return False


def check_attendance_during_spell(activity_date: date, earlier: Iterable[Spell]) -> bool:
    """15. ATTENDANCE_DURING_SPELL: the attendance falls strictly after the admission and strictly
    before the discharge of an earlier spell (the admission and discharge days are not "during")."""
    for admission, discharge in earlier:
        if admission < activity_date < discharge:
            return True
    return False


def pathway_reason(fact: PathwayFact, earlier: Sequence[Spell]) -> Reason | None:
    """The reason check 14 or 15 gives a line against `earlier`, the earlier countable spells of
    its patient and commissioner; None when neither applies."""
    if not earlier:
        return None
    _, activity_date, discharge = fact
    if discharge is None:
        return (
            Reason.ATTENDANCE_DURING_SPELL if check_attendance_during_spell(activity_date, earlier) else None
        )
    return Reason.OVERLAPPING_SPELL if check_overlapping_spell(activity_date, discharge, earlier) else None


class SpellIndex(Protocol):
    """Spells with nights of earlier lines whose outcome was not rejected, by invoice commissioner
    (upper-cased) and patient token, in submission order."""

    def spells(self, commissioner_code: str, nhs_token: str) -> Sequence[Spell]: ...
    def add(self, commissioner_code: str, nhs_token: str, spell: Spell) -> None: ...


_NONE: Final[tuple[Spell, ...]] = ()


class InMemorySpellIndex:
    """A SpellIndex in a dict: a whole replay in memory, or one batch's look-back (the earlier
    spells of the batch's patients, read from storage, plus the batch's own as they are settled)."""

    __slots__ = ("_spells",)

    def __init__(self) -> None:
        self._spells: dict[str, dict[str, list[Spell]]] = {}

    def spells(self, commissioner_code: str, nhs_token: str) -> Sequence[Spell]:
        return self._spells.get(commissioner_code, {}).get(nhs_token, _NONE)

    def add(self, commissioner_code: str, nhs_token: str, spell: Spell) -> None:
        self.patients(commissioner_code).setdefault(nhs_token, []).append(spell)

    def patients(self, commissioner_code: str) -> dict[str, list[Spell]]:
        """The commissioner's spells by patient token, live: adding to it adds to the index (for a
        caller that settles many lines of one commissioner, one dict look-up a line)."""
        return self._spells.setdefault(commissioner_code, {})

    def __len__(self) -> int:
        return sum(len(spells) for patients in self._spells.values() for spells in patients.values())


def decide_pathway_line(
    fact: PathwayFact, *, commissioner_code: str, rejected: bool, spells: SpellIndex
) -> Reason | None:
    """Checks 14 and 15 on one line, in its turn: the reason found against the earlier spells, then
    the line's own spell joins the index when the line's outcome is not rejected. `rejected`: the
    line's outcome without these checks (they only ever add a query reason, so it is final)."""
    nhs_token, activity_date, discharge = fact
    commissioner = commissioner_code.upper()
    reason = pathway_reason(fact, spells.spells(commissioner, nhs_token))
    if discharge is not None and not rejected:
        spells.add(commissioner, nhs_token, (activity_date, discharge))
    return reason
