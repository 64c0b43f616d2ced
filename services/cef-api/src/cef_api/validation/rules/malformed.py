"""Check 1, MALFORMED_LINE: a line whose values cannot be read is rejected and checked no further."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cef_api.validation.values import (
    ADMINISTRATIVE_CATEGORIES,
    CARE_BASES,
    OVERSEAS_VISITOR_STATUSES,
    POINTS_OF_DELIVERY,
)

if TYPE_CHECKING:
    from cef_api.validation.prepared import PreparedLine


def malformed_fields(
    line: PreparedLine,
    *,
    date_of_birth_given: bool,
    discharge_date_given: bool,
    field_count_differs: bool = False,
) -> tuple[str, ...]:
    """The columns that make the line malformed (empty: not malformed).

    `line_ref` or `hrg_code` missing; `point_of_delivery` not one of the five; `activity_date` missing
    or not a date; `date_of_birth`/`discharge_date` present but not a date; `amount` missing or not
    matching the pattern; `discharge_date` before `activity_date` whatever the point of delivery;
    (v2) `administrative_category`, `overseas_visitor_status` or `care_basis` present but not on its
    list (the line holds them upper-cased, so `s117` is `S117`, and `2` is still not `02`).
    Beyond the spec: a row with more or fewer fields than the header is malformed ("fields"), since
    its values cannot be attributed to columns (an unquoted `1,234.50` would otherwise read as 1).
    """
    problems: list[str] = []
    if field_count_differs:
        problems.append("fields")
    if line.line_ref is None:
        problems.append("line_ref")
    if line.hrg_code is None:
        problems.append("hrg_code")
    if line.point_of_delivery not in POINTS_OF_DELIVERY:
        problems.append("point_of_delivery")
    if line.activity_date is None:
        problems.append("activity_date")
    if date_of_birth_given and line.date_of_birth is None:
        problems.append("date_of_birth")
    if discharge_date_given and line.discharge_date is None:
        problems.append("discharge_date")
    if line.claimed_amount is None:
        problems.append("amount")
    if (
        line.discharge_date is not None
        and line.activity_date is not None
        and line.discharge_date < line.activity_date
    ):
        problems.append("discharge_date")
    if (
        line.administrative_category is not None
        and line.administrative_category not in ADMINISTRATIVE_CATEGORIES
    ):
        problems.append("administrative_category")
    if (
        line.overseas_visitor_status is not None
        and line.overseas_visitor_status not in OVERSEAS_VISITOR_STATUSES
    ):
        problems.append("overseas_visitor_status")
    if line.care_basis is not None and line.care_basis not in CARE_BASES:
        problems.append("care_basis")
    return tuple(problems)
