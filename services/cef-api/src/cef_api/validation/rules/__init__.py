"""The checks of validation-rules.md, one named unit each, in the order the engine runs them.

Adding a rule is adding a unit here: a `Check` to LINE_CHECKS / PATIENT_CHECKS, or a `WhoPaysRule`
to `who_pays.WHO_PAYS_RULES`.
"""

from __future__ import annotations

from typing import Final

from cef_api.validation.rules.context import Check, LineContext
from cef_api.validation.rules.eligibility import check_chargeable_overseas_visitor, check_private_patient
from cef_api.validation.rules.line_checks import (
    check_activity_period,
    check_nhs_number,
    check_tariff_and_price,
)
from cef_api.validation.rules.malformed import malformed_fields
from cef_api.validation.rules.outcome import Verdict, outcome_for, verdict_for
from cef_api.validation.rules.patient_checks import (
    check_cross_border_resident,
    check_date_of_birth,
    check_duplicate,
    check_patient_found,
    check_prior_approval,
    check_responsible_commissioner,
)
from cef_api.validation.rules.pricing import expected_price
from cef_api.validation.rules.who_pays import WHO_PAYS_RULES, WhoPaysRule, responsible_commissioner

# Checks 2-5 and 10-11: every line that is not malformed.
LINE_CHECKS: Final[tuple[Check, ...]] = (
    check_nhs_number,
    check_activity_period,
    check_tariff_and_price,
    check_private_patient,
    check_chargeable_overseas_visitor,
)
# Checks 6-9, 12, 13 and 16: only when the NHS number is valid. 13 and 16 read what 12 decided.
PATIENT_CHECKS: Final[tuple[Check, ...]] = (
    check_patient_found,
    check_date_of_birth,
    check_responsible_commissioner,
    check_cross_border_resident,
    check_prior_approval,
    check_duplicate,
)

__all__ = [
    "LINE_CHECKS",
    "PATIENT_CHECKS",
    "WHO_PAYS_RULES",
    "Check",
    "LineContext",
    "Verdict",
    "WhoPaysRule",
    "check_activity_period",
    "check_chargeable_overseas_visitor",
    "check_cross_border_resident",
    "check_date_of_birth",
    "check_duplicate",
    "check_nhs_number",
    "check_patient_found",
    "check_prior_approval",
    "check_private_patient",
    "check_responsible_commissioner",
    "check_tariff_and_price",
    "expected_price",
    "malformed_fields",
    "outcome_for",
    "responsible_commissioner",
    "verdict_for",
]
