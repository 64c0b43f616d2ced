"""Every reason code the validation engine can give, explained for the providers who read it.

One entry per code: adding a code to the engine (validation/types.py `Reason`) is adding one
entry here; a test keeps the two the same, and each entry's outcome that of the engine."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from cef_api.reasons.schemas import ReasonExplained, ReasonOutcome
from cef_api.validation.types import Reason


def _entry(code: Reason, outcome: ReasonOutcome, summary: str, action: str) -> ReasonExplained:
    return ReasonExplained(code=code.value, outcome=outcome, summary=summary, action=action)


# In the order of validation-rules.md: checks 1-9, then the v2 checks 10-16.
ENTRIES: Final[tuple[ReasonExplained, ...]] = (
    _entry(
        Reason.MALFORMED_LINE,
        "rejected",
        "The line could not be read: a required value is missing or is not written the way the "
        "backing data needs it (for example a date that is not a real date, an amount with a pound "
        "sign or commas, an unknown point of delivery, or a discharge before the admission).",
        "Correct the line in your backing data (line_ref, hrg_code, point_of_delivery, activity_date "
        "and amount are needed; dates as 2019-04-30, amounts as 1234.50) and send it again on a new "
        "invoice.",
    ),
    _entry(
        Reason.NHS_NUMBER_INVALID,
        "rejected",
        "The NHS number is missing or cannot be a real NHS number (it must have 10 digits, and its "
        "last digit must match the other nine).",
        "Check the NHS number against the patient's record, correct it and send the line again on "
        "a new invoice.",
    ),
    _entry(
        Reason.ACTIVITY_OUTSIDE_PERIOD,
        "rejected",
        "The activity date is outside the period this invoice covers.",
        "Claim the activity on an invoice for the period it took place in, or correct the activity "
        "date if it is wrong.",
    ),
    _entry(
        Reason.TARIFF_NOT_FOUND,
        "query",
        "There is no national tariff price for this HRG code at this point of delivery, so the "
        "amount you claimed cannot be checked.",
        "Check the HRG code and point of delivery; if they are right, agree the price with the "
        "commissioner, who will contact you about the line.",
    ),
    _entry(
        Reason.PRICE_MISMATCH,
        "query",
        "The amount you claimed is not the price the national tariff gives for this activity "
        "(shown as expected_amount), after your market forces factor and any extra bed days.",
        "Compare your amount with expected_amount: if yours is wrong, accept the expected price "
        "when the commissioner asks; if it is right, say why in your answer to the challenge.",
    ),
    _entry(
        Reason.PATIENT_NOT_FOUND,
        "query",
        "The NHS number is well formed, but no patient with that number is in the national patient "
        "records the CEF checks against.",
        "Check the NHS number against the patient's record and be ready to confirm it when the "
        "commissioner asks.",
    ),
    _entry(
        Reason.DOB_MISMATCH,
        "query",
        "The date of birth on the line is not the one the national patient records hold for this NHS number.",
        "Check both the NHS number and the date of birth against the patient's record and tell the "
        "commissioner which one was wrong.",
    ),
    _entry(
        Reason.RESIDENCE_UNKNOWN,
        "query",
        "The CEF could not tell which commissioner pays, because the patient was not registered "
        "with a GP on the activity date and there is no usable postcode for where they live.",
        "Add the patient's postcode of usual address to the line if you hold it, or tell the "
        "commissioner where the patient lived at the time.",
    ),
    _entry(
        Reason.NOT_RESPONSIBLE_COMMISSIONER,
        "rejected",
        "Another commissioner (named in responsible_commissioner) pays for this activity, not the "
        "one this invoice is addressed to.",
        "Claim the activity on an invoice to the commissioner named in responsible_commissioner.",
    ),
    _entry(
        Reason.DUPLICATE_ACTIVITY,
        "rejected",
        "The same activity for the same patient (same date, HRG code and point of delivery) has "
        "already been claimed from this commissioner, on an earlier invoice or higher up this one.",
        "Remove the repeated line; if it really was a second activity, tell the commissioner so it "
        "can be looked at.",
    ),
    _entry(
        Reason.PRIVATE_PATIENT,
        "rejected",
        "The line says the patient was treated as a private patient (administrative category 02), "
        "and the NHS does not pay for private care.",
        "Charge the patient or their insurer instead; if the patient was in fact an NHS patient, "
        "correct the administrative category and send the line again on a new invoice.",
    ),
    _entry(
        Reason.CHARGEABLE_OVERSEAS_VISITOR,
        "rejected",
        "The line says the patient is an overseas visitor who must pay for this care (overseas "
        "visitor status 2, 3 or 4), so no commissioner pays for it.",
        "Recover the charge from the patient under the overseas visitor charging rules; if the "
        "patient is exempt, correct the status and send the line again on a new invoice.",
    ),
    _entry(
        Reason.ORIGINATING_COMMISSIONER_UNKNOWN,
        "query",
        "The line says the care is section 117 aftercare or NHS continuing healthcare, but the CEF "
        "holds no record of which commissioner placed the patient in that care on the activity date.",
        "Tell the commissioner who arranged the aftercare or continuing healthcare, or remove the "
        "care basis if the line was not that kind of care.",
    ),
    _entry(
        Reason.CROSS_BORDER_RESIDENT,
        "query",
        "The patient is registered with a GP in England but lives in Wales, Scotland or Northern "
        "Ireland, where the rules on who pays differ.",
        "Be ready to confirm where the patient lived and which practice they were registered with "
        "when the commissioner asks; the commissioner decides who pays.",
    ),
    _entry(
        Reason.OVERLAPPING_SPELL,
        "query",
        "This hospital stay shares at least one night with a stay for the same patient already "
        "claimed from this commissioner, by you or by another provider.",
        "Check the admission and discharge dates of both stays and tell the commissioner which one "
        "is right (a transfer discharged and admitted on the same day does not overlap).",
    ),
    _entry(
        Reason.ATTENDANCE_DURING_SPELL,
        "query",
        "This outpatient attendance or day case falls while the same patient was staying in hospital "
        "under a stay already claimed from this commissioner, by you or by another provider.",
        "Check the date of the attendance and the dates of the stay, and tell the commissioner "
        "whether the attendance really took place apart from the stay.",
    ),
    _entry(
        Reason.PRIOR_APPROVAL_MISSING,
        "query",
        "The commissioner holds no contract with you for this activity on that date, and the line "
        "has no prior approval reference that matches one the commissioner gave for this patient "
        "and date.",
        "Add the commissioner's prior approval reference for this patient to the line (as the "
        "commissioner wrote it), or show the commissioner the contract that covers the activity.",
    ),
)

CATALOGUE: Final[dict[str, ReasonExplained]] = {entry.code: entry for entry in ENTRIES}


def explain(codes: Iterable[str]) -> list[ReasonExplained]:
    """The catalogue's entries for `codes`, once each, sorted by code. A code the catalogue does not
    know (none, while the test of its completeness passes) is left out rather than guessed at."""
    return [CATALOGUE[code] for code in sorted(set(codes)) if code in CATALOGUE]


def explain_lines(reasons: Iterable[Iterable[str]]) -> list[ReasonExplained]:
    """The entries for every code on a page of lines (each line's reasons)."""
    return explain(code for line in reasons for code in line)
