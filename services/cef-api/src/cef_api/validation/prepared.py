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
from cef_api.validation.postcode import outward_code
from cef_api.validation.rules.malformed import malformed_fields
from cef_api.validation.values import parse_amount, parse_date, parse_date_uncached, upper_code


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
    ) = values
    line = PreparedLine(
        line_no,
        line_ref,
        False,
        normalise_nhs_number(nhs_number),
        parse_date_uncached(date_of_birth_raw),
        outward_code(postcode) if postcode is not None else None,
        upper_code(service_code),
        upper_code(point_of_delivery),
        upper_code(hrg_code),
        parse_date(activity_date),
        parse_date(discharge_raw),
        parse_amount(amount),
    )
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
