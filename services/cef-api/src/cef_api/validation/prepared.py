"""A backing data line parsed once: typed values, upper-cased codes and the malformed check's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from cef_api.validation.csvfile import RawLine
from cef_api.validation.nhs_number import normalise_nhs_number
from cef_api.validation.postcode import outward_code
from cef_api.validation.rules.malformed import malformed_fields
from cef_api.validation.values import parse_amount, parse_date, parse_date_uncached


@dataclass(slots=True)
class PreparedLine:
    """What the checks need of one line. `nhs_number` is held in memory only, never stored or logged."""

    line_no: int
    line_ref: str | None
    malformed: bool  # check 1 failed
    nhs_number: str | None  # the valid 10 digits, or None (missing or invalid)
    date_of_birth: date | None
    outward_code: str | None  # of the line's postcode; the postcode itself is not kept
    service_code: str | None
    point_of_delivery: str | None
    hrg_code: str | None
    activity_date: date | None
    discharge_date: date | None
    claimed_amount: Decimal | None  # when the amount matches the amount pattern
    # Why check 1 failed, as column names (and "fields" for a row of the wrong width): for messages.
    malformed_fields: tuple[str, ...] = field(default=())


def _upper(value: str | None) -> str | None:
    return value.upper() if value is not None else None


def prepare_line(raw: RawLine) -> PreparedLine:
    """Parse a RawLine (values already trimmed, empty → None) and run check 1, MALFORMED_LINE."""
    get = raw.values.get
    date_of_birth_raw = get("date_of_birth")
    discharge_raw = get("discharge_date")
    postcode = get("postcode")
    line = PreparedLine(
        raw.line_no,
        get("line_ref"),
        False,
        normalise_nhs_number(get("nhs_number")),
        parse_date_uncached(date_of_birth_raw),
        outward_code(postcode) if postcode is not None else None,
        _upper(get("service_code")),
        _upper(get("point_of_delivery")),
        _upper(get("hrg_code")),
        parse_date(get("activity_date")),
        parse_date(discharge_raw),
        parse_amount(get("amount")),
    )
    problems = malformed_fields(
        line,
        date_of_birth_given=date_of_birth_raw is not None,
        discharge_date_given=discharge_raw is not None,
        field_count_differs=raw.field_count is not None,
    )
    if problems:
        line.malformed = True
        line.malformed_fields = problems
    return line
