"""Streaming reader of backing data CSV: bytes in any chunks → trimmed rows of the known columns."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from operator import itemgetter
from typing import Any, Final

from cef_common.errors import Unprocessable
from cef_common.redact import carries_identifier

REQUIRED_COLUMNS: Final[tuple[str, ...]] = (
    "line_ref",
    "nhs_number",
    "point_of_delivery",
    "hrg_code",
    "activity_date",
    "amount",
)
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = (
    "date_of_birth",
    "postcode",
    "gp_practice_code",
    "service_code",
    "discharge_date",
    "administrative_category",
    "overseas_visitor_status",
    "care_basis",
    "prior_approval_ref",
)
KNOWN_COLUMNS: Final[frozenset[str]] = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
# The names real extracts use (NHS Data Model and Dictionary / SUS), already normalised
# (`header_key`): a header cell with one of them names the column.
COLUMN_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "nhs_number": ("nhs_no",),
    "date_of_birth": ("person_birth_date", "dob"),
    "postcode": ("postcode_of_usual_address", "postcode_usual_address"),
    "gp_practice_code": (
        "general_medical_practice_code",
        "general_medical_practice_code_patient_registration",
    ),
    "service_code": ("specialised_service_code",),
    "point_of_delivery": ("pod",),
    "hrg_code": ("hrg", "spell_core_hrg"),
    "activity_date": ("admission_date", "appointment_date"),
    "discharge_date": ("discharge_date_hospital_provider_spell",),
    "amount": ("price", "tariff_total_payment"),
    "administrative_category": ("administrative_category_code",),
    "overseas_visitor_status": ("overseas_visitor_status_classification",),
}
# Normalised header cell → the column it names: every column under its own name and its aliases.
_COLUMN_NAMED: Final[dict[str, str]] = {
    **{column: column for column in KNOWN_COLUMNS},
    **{alias: column for column, aliases in COLUMN_ALIASES.items() for alias in aliases},
}
# Only spaces and hyphens: a tab, an underscore or a bracket keeps a name apart (an unknown column).
_SEPARATOR_RUN: Final = re.compile(r"[ -]+")


def header_key(cell: str) -> str:
    """A header cell as it is matched: trimmed, lower-cased, every run of spaces and hyphens one `_`."""
    return _SEPARATOR_RUN.sub("_", cell.strip().lower())


def column_named(cell: str) -> str | None:
    """The column a header cell names (by its own name or an alias), or None for an unknown one."""
    return _COLUMN_NAMED.get(header_key(cell))


class BackingDataError(Unprocessable):
    """The backing data file cannot be read as a whole; nothing of it may be kept."""

    code = "backing-data-invalid"
    title = "Backing data is not valid"

    def __init__(
        self,
        detail: str,
        *,
        line: int | None = None,
        column: str | None = None,
        cells: tuple[str, str] | None = None,
        problem: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if line is not None:
            extra["line"] = line
        if column is not None:
            extra["column"] = column
        if cells is not None:
            # The header cells at fault, exactly as the file writes them.
            extra["cells"] = list(cells)
        if problem is not None:
            # A stable name for what is wrong, for callers that act on it (e.g. DUPLICATE_COLUMN).
            extra["problem"] = problem
        super().__init__(detail, extra=extra)


@dataclass(slots=True)
class RawLine:
    """One data row: `line_no` counts data rows from 1 (header excluded); values trimmed, empty → None."""

    line_no: int
    values: dict[str, str | None]
    # Set when the row's field count differs from the header's: its values cannot be trusted to be
    # in the right columns, so the line is malformed (see rules.malformed).
    field_count: int | None = field(default=None)


@dataclass(slots=True)
class _Position:
    """Physical lines handed to the csv reader so far, to name the line of a decoding error."""

    newlines: int = 0


def _decoded_blocks(chunks: Iterable[bytes], position: _Position) -> Iterator[io.StringIO]:
    """UTF-8 (optional BOM) text in blocks of whole physical lines, each an io.StringIO to iterate.

    Only `\\n` cuts a block, so a CRLF split across chunks stays whole; io.StringIO(newline="")
    then splits on `\\r\\n`, `\\n` or `\\r` exactly as csv expects (and never on the other
    Unicode line boundaries `str.splitlines` honours, which would end records inside values). Lines
    reach csv.reader through C iterators only: no Python frame per line.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    pending = ""
    for chunk in chunks:
        if not chunk:
            continue
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            line = position.newlines + pending.count("\n") + exc.object[: exc.start].count(b"\n") + 1
            raise _not_utf8(line) from None
        if pending:
            text = pending + text
        cut = text.rfind("\n") + 1
        if cut == 0:
            pending = text
            continue
        pending = text[cut:]
        block = text[:cut]
        _refuse_nul(block, position)
        position.newlines += block.count("\n")
        yield io.StringIO(block, newline="")
    try:
        text = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _not_utf8(position.newlines + pending.count("\n") + 1) from None
    text = pending + text
    if text:
        _refuse_nul(text, position)
        position.newlines += text.count("\n")
        yield io.StringIO(text, newline="")


def _refuse_nul(block: str, position: _Position) -> None:
    # csv accepts NUL since 3.11, but no database text column can hold one.
    at = block.find("\x00")
    if at >= 0:
        line = position.newlines + block.count("\n", 0, at) + 1
        raise BackingDataError(
            f"Backing data holds a NUL character on line {line} of the file; remove it and submit again.",
            line=line,
        )


def _not_utf8(line: int) -> BackingDataError:
    return BackingDataError(
        f"Backing data must be UTF-8: line {line} of the file holds bytes that are not; "
        "save the file as UTF-8 (CSV UTF-8) and submit it again.",
        line=line,
    )


def _is_blank(row: list[str]) -> bool:
    return all(not value.strip() for value in row)


def read_backing_data(chunks: Iterable[bytes], *, check_repeats: bool = True) -> Iterator[RawLine]:
    """Rows of backing data as RawLines, streaming over byte chunks split anywhere.

    UTF-8 with optional BOM; LF or CRLF; RFC 4180 quoting (strict: a stray quote refuses the file, as
    the row boundaries after it are unknowable). Header cells name columns as `column_named` reads
    them (own names and aliases; two cells naming one column refuse the file); unknown columns are
    ignored. Blank rows (no field with content) are skipped.
    Raises BackingDataError for a file that cannot be read; a repeated `line_ref` is found only when
    reached, so callers must not keep anything before iteration ends. `check_repeats=False` skips
    that check (and the memory of every line_ref it needs), for a second pass over bytes that
    `count_backing_data` has already accepted.
    """
    position = _Position()
    reader = csv.reader(chain.from_iterable(_decoded_blocks(chunks, position)), strict=True)
    try:
        yield from _rows(reader, check_repeats=check_repeats)
    except csv.Error as exc:
        raise _not_csv(reader, exc) from None


def read_backing_values(
    chunks: Iterable[bytes], columns: tuple[str, ...], *, check_repeats: bool = True
) -> Iterator[tuple[int, tuple[str | None, ...], bool]]:
    """`read_backing_data` without a dict per row: (line_no, the values of `columns` in that order,
    whether the row's field count differs from the header's), for the validation job's hot path.

    Same rows, values (None for a column the file lacks) and errors as read_backing_data."""
    position = _Position()
    reader = csv.reader(chain.from_iterable(_decoded_blocks(chunks, position)), strict=True)
    try:
        yield from _value_rows(reader, columns, check_repeats=check_repeats)
    except csv.Error as exc:
        raise _not_csv(reader, exc) from None


def count_backing_data(chunks: Iterable[bytes]) -> int:
    """The number of lines `read_backing_data` would yield, raising exactly the BackingDataError it
    would raise; cheaper, as only line_ref is read of each row (the structural pass)."""
    return survey_backing_data(chunks).lines


@dataclass(frozen=True, slots=True)
class BackingSurvey:
    """What the structural pass learnt of a file: its line count and, when asked for batches of
    `batch_lines`, the physical line (as `csv.reader.line_num` counts them) on which each batch's
    last data row ends; the last batch ends with the file."""

    lines: int
    batch_lines: int | None = None
    batch_ends: tuple[int, ...] = ()


def survey_backing_data(chunks: Iterable[bytes], *, batch_lines: int | None = None) -> BackingSurvey:
    """`count_backing_data`, also noting where every `batch_lines` data rows end, so that a later pass
    can cut the file into batches of whole records (`split_backing_batches`) without parsing it."""
    position = _Position()
    reader = csv.reader(chain.from_iterable(_decoded_blocks(chunks, position)), strict=True)
    try:
        lines, ends = _count(reader, batch_lines)
    except csv.Error as exc:
        raise _not_csv(reader, exc) from None
    return BackingSurvey(lines, batch_lines, tuple(ends))


@dataclass(frozen=True, slots=True)
class BatchLayout:
    """The header of a file as a batch needs it: the row width and where each wanted column is (the
    width itself for a column the file lacks, which reads the None appended to every row)."""

    width: int
    ref_index: int
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BackingBatch:
    """Whole records of a file: `text` holds its physical lines, `first_line_no` numbers its first
    data row and `lines` says how many data rows it holds."""

    first_line_no: int
    lines: int
    text: str


def split_backing_batches(
    chunks: Iterable[bytes], survey: BackingSurvey, columns: tuple[str, ...]
) -> tuple[BatchLayout, Iterator[BackingBatch]]:
    """The file `survey_backing_data` accepted, cut where it noted, as text batches that can be read
    (`read_batch_values`) apart from each other, e.g. in other processes. Only the header is parsed
    here; the rest is moved as whole physical lines."""
    if survey.batch_lines is None:
        raise ValueError("split_backing_batches needs a survey made with batch_lines")
    batch_lines = survey.batch_lines
    position = _Position()
    physical = chain.from_iterable(_decoded_blocks(chunks, position))
    reader = csv.reader(physical, strict=True)
    width, found = _header(reader)
    index_of = dict(found)
    layout = BatchLayout(width, index_of["line_ref"], tuple(index_of.get(name, width) for name in columns))
    # csv.reader takes one physical line at a time from `physical`, so after the header it is there.
    start = reader.line_num

    def batches() -> Iterator[BackingBatch]:
        done = start
        for number, end in enumerate(survey.batch_ends):
            text = "".join(islice(physical, end - done))
            done = end
            yield BackingBatch(number * batch_lines + 1, batch_lines, text)
        rest = survey.lines - len(survey.batch_ends) * batch_lines
        if rest > 0:
            yield BackingBatch(len(survey.batch_ends) * batch_lines + 1, rest, "".join(physical))

    return layout, batches()


def read_batch_values(
    batch: BackingBatch, layout: BatchLayout
) -> Iterator[tuple[int, tuple[str | None, ...], bool]]:
    """`read_backing_values` of one batch (without the repeat check, done by the survey): the same
    line numbers, values and flags the whole-file reader gives those rows. Raises RuntimeError if the
    batch does not hold the rows the survey counted, which would mean the cut was wrong."""
    reader = csv.reader(io.StringIO(batch.text, newline=""), strict=True)
    held = 0
    for row in _data_rows(reader, layout, batch.first_line_no - 1, check_repeats=False):
        held += 1
        yield row
    if held != batch.lines:
        raise RuntimeError(f"a batch of backing data held {held} rows where {batch.lines} were counted")


def _not_csv(reader: Any, exc: csv.Error) -> BackingDataError:
    return BackingDataError(
        f"Backing data is not valid CSV at line {reader.line_num} of the file ({exc}); "
        'quote values containing commas, quotes or line breaks ("a, b"), doubling quotes inside them.',
        line=reader.line_num,
    )


def _repeated(line_ref: str, first: int, line_no: int) -> BackingDataError:
    return BackingDataError(
        # Quoted only when nothing in it is shaped like an identifier: it is the provider's text.
        f"Backing data repeats {'a line_ref' if carries_identifier(line_ref) else f'line_ref {line_ref!r}'}: "
        f"data rows {first} and {line_no} "
        "(header excluded) both carry it; every line_ref must be unique within the invoice.",
        line=line_no,
        column="line_ref",
    )


def _named_twice(column: str, first: str, second: str, line: int) -> BackingDataError:
    # The cells are quoted as written: a cell that names a column is letters, spaces, hyphens and
    # underscores only, so it cannot carry an identifier.
    return BackingDataError(
        f"Backing data names the column {column!r} twice in its header row, as {first!r} and "
        f"{second!r}; keep one of the two cells (or rename the other to a name the CEF does not read).",
        line=line,
        column=column,
        cells=(first, second),
        problem="DUPLICATE_COLUMN",
    )


def _header(reader: Any) -> tuple[int, list[tuple[str, int]]]:
    """The header row's width and the (name, index) of each known column it names."""
    header: list[str] | None = None
    for row in reader:
        if not _is_blank(row):
            header = row
            break
    if header is None:
        raise BackingDataError(
            "Backing data is empty: the file must start with a header row naming the columns "
            f"({', '.join(REQUIRED_COLUMNS)}) followed by one row per line."
        )
    columns: list[tuple[str, int]] = []
    # The column → the index of the cell that first named it, to name both cells of a repeat.
    first_cell: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = column_named(cell)
        if name is None:
            continue
        first = first_cell.setdefault(name, index)
        if first != index:
            raise _named_twice(name, header[first], cell, reader.line_num)
        columns.append((name, index))
    seen = first_cell.keys()
    missing = [name for name in REQUIRED_COLUMNS if name not in seen]
    if missing:
        raise BackingDataError(
            f"Backing data lacks the required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}: the header row must name every one of {', '.join(REQUIRED_COLUMNS)}.",
            line=reader.line_num,
            column=missing[0],
        )
    return len(header), columns


def _count(reader: Any, batch_lines: int | None = None) -> tuple[int, list[int]]:
    """`_rows` reading nothing but line_ref: the same rows skipped, counted and refused; with
    `batch_lines`, the reader's line_num after every batch_lines-th row."""
    width, columns = _header(reader)
    ref_index = dict(columns)["line_ref"]
    first_line_of: dict[str, int] = {}
    setdefault = first_line_of.setdefault
    line_no = 0
    ends: list[int] = []
    # No batches: a mark no row number reaches.
    next_end = batch_lines if batch_lines else -1
    for row in reader:
        if len(row) == width:
            line_ref = row[ref_index].strip() or None
            if line_ref is None and _is_blank(row):
                continue
        else:
            if _is_blank(row):
                continue
            line_ref = (row[ref_index].strip() or None) if ref_index < len(row) else None
        line_no += 1
        if line_ref is not None:
            first = setdefault(line_ref, line_no)
            if first != line_no:
                raise _repeated(line_ref, first, line_no)
        if line_no == next_end:
            ends.append(reader.line_num)
            next_end += batch_lines or 0
    # A batch ending with the file is the last batch, not a mark.
    if ends and line_no % (batch_lines or 1) == 0:
        ends.pop()
    return line_no, ends


def _value_rows(
    reader: Any, wanted: tuple[str, ...], *, check_repeats: bool
) -> Iterator[tuple[int, tuple[str | None, ...], bool]]:
    """`_rows` giving each row's values as a tuple in `wanted` order."""
    width, columns = _header(reader)
    index_of = dict(columns)
    # A column the file lacks reads the None appended to every row's values.
    layout = BatchLayout(width, index_of["line_ref"], tuple(index_of.get(name, width) for name in wanted))
    yield from _data_rows(reader, layout, 0, check_repeats=check_repeats)


def _data_rows(
    reader: Any, layout: BatchLayout, line_no: int, *, check_repeats: bool
) -> Iterator[tuple[int, tuple[str | None, ...], bool]]:
    """The rows after the header, numbered on from `line_no`: the one loop of `_value_rows` and
    `read_batch_values`."""
    width, ref_index, indexes = layout.width, layout.ref_index, layout.indexes
    pick: Callable[[list[str | None]], tuple[str | None, ...]] = (
        itemgetter(*indexes) if len(indexes) > 1 else lambda values: (values[indexes[0]],)
    )
    first_line_of: dict[str, int] = {}
    setdefault = first_line_of.setdefault
    for row in reader:
        if len(row) == width:
            values = [v.strip() or None for v in row]
            line_ref = values[ref_index]
            if line_ref is None and _is_blank(row):
                continue
            differs = False
        else:
            if _is_blank(row):
                continue
            values = [v.strip() or None for v in row[:width]]
            values.extend([None] * (width - len(values)))
            line_ref = values[ref_index]
            differs = True
        values.append(None)
        line_no += 1
        if check_repeats and line_ref is not None:
            first = setdefault(line_ref, line_no)
            if first != line_no:
                raise _repeated(line_ref, first, line_no)
        yield line_no, pick(values), differs


def _rows(reader: Any, *, check_repeats: bool = True) -> Iterator[RawLine]:
    width, columns = _header(reader)
    # Fast path when the known columns are the whole row, in order (the common file): zip the names.
    in_order = [index for _, index in columns] == list(range(width))
    column_names = [name for name, _ in columns]
    first_line_of: dict[str, int] = {}
    line_no = 0
    for row in reader:
        if len(row) == width:
            if in_order:
                values: dict[str, str | None] = dict(
                    zip(column_names, [v.strip() or None for v in row], strict=True)
                )
            else:
                values = {name: (row[i].strip() or None) for name, i in columns}
            field_count = None
        else:
            if _is_blank(row):
                continue
            values = {name: ((row[i].strip() or None) if i < len(row) else None) for name, i in columns}
            field_count = len(row)
        line_ref = values["line_ref"]
        if line_ref is None and field_count is None and _is_blank(row):
            continue
        line_no += 1
        if check_repeats and line_ref is not None:
            first = first_line_of.setdefault(line_ref, line_no)
            if first != line_no:
                raise _repeated(line_ref, first, line_no)
        yield RawLine(line_no, values, field_count)
