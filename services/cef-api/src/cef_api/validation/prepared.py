"""A backing data line parsed once: typed values, upper-cased codes and the malformed check's verdict."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Final

from cef_api.validation.csvfile import (
    BackingBatch,
    BatchLayout,
    RawLine,
    read_backing_values,
    read_batch_values,
)
from cef_api.validation.nhs_number import normalise_nhs_number
from cef_api.validation.postcode import compact_postcode
from cef_api.validation.rules.malformed import malformed_fields
from cef_api.validation.values import parse_amount, parse_date, parse_date_uncached, upper_code
from cef_common.logging import IDENTIFIER_SHAPES
from cef_common.redact import carries_identifier


@dataclass(slots=True)
class PreparedLine:
    """What the checks need of one line. `nhs_number` is held in memory only, never stored or logged."""

    line_no: int
    line_ref: str | None
    malformed: bool  # check 1 failed
    nhs_number: str | None  # the valid 10 digits, or None (missing or invalid)
    date_of_birth: date | None
    outward_code: str | None  # of the line's postcode; the postcode itself is only tokenised
    service_code: str | None
    point_of_delivery: str | None
    hrg_code: str | None
    activity_date: date | None
    discharge_date: date | None
    claimed_amount: Decimal | None  # when the amount matches the amount pattern
    # Why check 1 failed, as column names (and "fields" for a row of the wrong width): for messages.
    malformed_fields: tuple[str, ...] = field(default=())
    # The line's postcode, compact and upper-cased (`compact_postcode`), held in memory only to be
    # tokenised, never stored or logged.
    postcode: str | None = None
    # Columns whose value is shaped like an identifier: the checks see the value as given (the
    # outcome is the contract's), but it is not stored or shown with the line (`stored_codes`).
    withheld: tuple[str, ...] = field(default=())
    # v2 optional columns: the three codes trimmed and upper-cased (check 1 refuses a value off its
    # list); the prior-approval reference trimmed, as typed. That reference is the provider's free
    # text: held in memory for check 16 only, never stored, and withheld (`withheld`) when it
    # carries an identifier, should anything ever show it (`shown_prior_approval_ref`).
    administrative_category: str | None = None
    overseas_visitor_status: str | None = None
    care_basis: str | None = None
    prior_approval_ref: str | None = None


# The columns a PreparedLine is made of, in the order `_prepare` takes them.
PREPARED_COLUMNS: Final[tuple[str, ...]] = (
    "line_ref",
    "nhs_number",
    "date_of_birth",
    "postcode",
    "service_code",
    "point_of_delivery",
    "hrg_code",
    "activity_date",
    "discharge_date",
    "amount",
    "administrative_category",
    "overseas_visitor_status",
    "care_basis",
    "prior_approval_ref",
)


def prepare_line(raw: RawLine) -> PreparedLine:
    """Parse a RawLine (values already trimmed, empty → None) and run check 1, MALFORMED_LINE."""
    get = raw.values.get
    return _prepare(raw.line_no, tuple(get(name) for name in PREPARED_COLUMNS), raw.field_count is not None)


def prepare_backing_data(chunks: Iterable[bytes], *, check_repeats: bool = True) -> Iterator[PreparedLine]:
    """`prepare_line` of every line `read_backing_data(chunks)` yields, without the RawLines between
    (the validation job's hot path); the same errors."""
    for line_no, values, field_count_differs in read_backing_values(
        chunks, PREPARED_COLUMNS, check_repeats=check_repeats
    ):
        yield _prepare(line_no, values, field_count_differs)


def prepare_batch(batch: BackingBatch, layout: BatchLayout) -> list[PreparedLine]:
    """`prepare_backing_data` of one batch that `split_backing_batches` cut (layout over
    PREPARED_COLUMNS): the same PreparedLines the whole-file pass gives those rows."""
    return [_prepare(number, values, differs) for number, values, differs in read_batch_values(batch, layout)]


def _prepare(line_no: int, values: tuple[str | None, ...], field_count_differs: bool) -> PreparedLine:
    """The one implementation of prepare_line: `values` in PREPARED_COLUMNS order."""
    (
        line_ref,
        nhs_number,
        date_of_birth_raw,
        postcode,
        service_code,
        point_of_delivery,
        hrg_code,
        activity_date,
        discharge_raw,
        amount,
        administrative_category,
        overseas_visitor_status,
        care_basis,
        prior_approval_ref,
    ) = values
    compact = compact_postcode(postcode) if postcode is not None else None
    line = PreparedLine(
        line_no,
        line_ref,
        False,
        normalise_nhs_number(nhs_number),
        parse_date_uncached(date_of_birth_raw),
        compact[:-3] if compact is not None else None,
        upper_code(service_code),
        upper_code(point_of_delivery),
        upper_code(hrg_code),
        parse_date(activity_date),
        parse_date(discharge_raw),
        parse_amount(amount),
        postcode=compact,
        administrative_category=upper_code(administrative_category),
        overseas_visitor_status=upper_code(overseas_visitor_status),
        care_basis=upper_code(care_basis),
        prior_approval_ref=prior_approval_ref,
    )
    line.withheld = _identifier_columns(line)
    problems = malformed_fields(
        line,
        date_of_birth_given=date_of_birth_raw is not None,
        discharge_date_given=discharge_raw is not None,
        field_count_differs=field_count_differs,
    )
    if problems:
        line.malformed = True
        line.malformed_fields = problems
    return line


# Whether a code holds an identifier, per distinct code (codes repeat on every line).
_CODE_HOLDS_IDENTIFIER: dict[str, bool] = {}


def _code_holds_identifier(code: str) -> bool:
    held = _CODE_HOLDS_IDENTIFIER.get(code)
    if held is None:
        if len(_CODE_HOLDS_IDENTIFIER) >= 10_000:
            _CODE_HOLDS_IDENTIFIER.clear()
        held = _CODE_HOLDS_IDENTIFIER[code] = carries_identifier(code)
    return held


def _line_ref_is_identifier(line_ref: str) -> bool:
    """A line_ref that is itself an NHS number, a date or a postcode (not one merely holding digits
    or a date among other text, as providers' references often do)."""
    return any(shape.fullmatch(line_ref) for shape in IDENTIFIER_SHAPES)


def _identifier_columns(line: PreparedLine) -> tuple[str, ...]:
    """The columns holding an identifier typed where a reference or a code belongs. Their values
    still decide the outcome exactly as validation-rules.md says (such a code is on no list, so it
    prices or matches nothing), but they are never stored or shown with the line."""
    withheld: list[str] = []
    if line.line_ref is not None and _line_ref_is_identifier(line.line_ref):
        withheld.append("line_ref")
    if line.service_code is not None and _code_holds_identifier(line.service_code):
        withheld.append("service_code")
    if line.point_of_delivery is not None and _code_holds_identifier(line.point_of_delivery):
        withheld.append("point_of_delivery")
    if line.hrg_code is not None and _code_holds_identifier(line.hrg_code):
        withheld.append("hrg_code")
    # Free text, so any identifier in it (not only the whole value) withholds it; never cached.
    if line.prior_approval_ref is not None and carries_identifier(line.prior_approval_ref):
        withheld.append("prior_approval_ref")
    return tuple(withheld)


def stored_codes(line: PreparedLine) -> tuple[str | None, str | None, str | None, str | None]:
    """`line_ref`, `hrg_code`, `point_of_delivery` and `service_code` as they may be stored and
    shown: None for a column that holds an identifier."""
    if not line.withheld:
        return line.line_ref, line.hrg_code, line.point_of_delivery, line.service_code
    kept = line.withheld
    return (
        None if "line_ref" in kept else line.line_ref,
        None if "hrg_code" in kept else line.hrg_code,
        None if "point_of_delivery" in kept else line.point_of_delivery,
        None if "service_code" in kept else line.service_code,
    )


def shown_prior_approval_ref(line: PreparedLine) -> str | None:
    """The line's prior-approval reference as it may be shown: None when it carries an identifier.
    Nothing stores it today; whatever comes to store or show it goes through here."""
    return None if "prior_approval_ref" in line.withheld else line.prior_approval_ref
