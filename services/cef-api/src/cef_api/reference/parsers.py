"""Parsers of the reference datasets: bytes of a file in, typed rows out, or the whole file refused.

Pure: no database, no tokenising. Every row is checked; a file with any bad row is refused whole
with its first errors by line (of the file, 1-based) and column. Error messages never repeat a
value of the patient files (NHS numbers, dates, postcodes): the line and column locate it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Final, Protocol

from cef_api.validation.nhs_number import normalise_nhs_number
from cef_api.validation.postcode import outward_code
from cef_api.validation.values import CARE_BASES, POINTS_OF_DELIVERY, parse_date_uncached
from cef_common.errors import NotFound, Unprocessable
from cef_common.params import MAX_INTEGER
from cef_common.redact import carries_identifier

DATASETS: Final[tuple[str, ...]] = (
    "gp-practices",
    "patients",
    "registrations",
    "postcode-districts",
    "tariff",
    "providers",
    "specialised-services",
    # v2, all optional: a CEF without them validates as v1 did.
    "originating-commissioners",
    "devolved-districts",
    "contracts",
    "prior-approvals",
)
FILENAMES: Final[dict[str, str]] = {
    "gp-practices": "epraccur.csv",
    "patients": "patients.csv",
    "registrations": "registrations.csv",
    "postcode-districts": "postcode_districts.csv",
    "tariff": "tariff.csv",
    "providers": "providers.csv",
    "specialised-services": "specialised_services.csv",
    "originating-commissioners": "originating_commissioners.csv",
    "devolved-districts": "devolved_districts.csv",
    "contracts": "contracts.csv",
    "prior-approvals": "prior_approvals.csv",
}
# The order a directory of files is loaded in (`cef reference load`, the seed on start): practices
# and providers first, patient-keyed data last.
LOAD_ORDER: Final[tuple[str, ...]] = (
    "gp-practices",
    "providers",
    "tariff",
    "specialised-services",
    "postcode-districts",
    "devolved-districts",
    "contracts",
    "patients",
    "registrations",
    "originating-commissioners",
    "prior-approvals",
)
# devolved_districts.csv: Wales, Scotland, Northern Ireland.
NATIONS: Final = frozenset({"W", "S", "N"})
MAX_REPORTED_ERRORS: Final = 20
EPRACCUR_FIELDS: Final = 27

_CODE: Final = re.compile(r"[A-Z0-9]+")
_DISTRICT: Final = re.compile(r"[A-Z][A-Z0-9]{1,3}")
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_INTEGER: Final = re.compile(r"[0-9]+")
# The widths of the reference tables' columns (migrations 0002): codes String(12), numbers kept as
# text String(20), names String(200) or more; integers are INTEGER (cef_common.params.MAX_INTEGER).
MAX_CODE: Final = 12
MAX_NUMBER: Final = 20
MAX_TEXT: Final = 200
MAX_REFERENCE: Final = 40  # a prior approval's reference (migration 0008)


def _named(value: str) -> str:
    """` value` for a message, or nothing when the value is shaped like an identifier (a file's
    key may be an NHS number, e.g. the patients file's): messages point at lines, not at data."""
    return "" if carries_identifier(value) else f" {value}"


class ReferenceFileError(Unprocessable):
    """A reference file refused whole; `errors` lists the first problems by line and column."""

    code = "reference-file-invalid"
    title = "Reference file is not valid"

    def __init__(self, dataset: str, errors: list[dict[str, Any]], total: int | None = None) -> None:
        total = len(errors) if total is None else total
        first = errors[0]
        where = f"line {first['line']}" + (f", column {first['column']}" if first.get("column") else "")
        more = f" (and {total - 1} more problem{'s' if total > 2 else ''})" if total > 1 else ""
        super().__init__(
            f"The {dataset} file was not loaded: {where}: {first['message']}{more}. "
            "Correct the file and load it again; nothing of it was kept.",
            extra={"dataset": dataset, "errors": errors[:MAX_REPORTED_ERRORS], "error_count": total},
        )
        self.dataset = dataset
        self.errors = errors[:MAX_REPORTED_ERRORS]


class UnknownDatasetError(NotFound):
    code = "dataset-unknown"
    title = "Unknown reference dataset"


@dataclass(frozen=True, slots=True)
class GpPracticeRow:
    gp_practice_code: str
    name: str
    commissioner_code: str | None  # field 15; blank in the extract for a few (e.g. Channel Islands)
    status: str  # field 13: A active, C closed, D dormant, P proposed; every status is kept


@dataclass(frozen=True, slots=True)
class PatientRow:
    """A trace entry with its raw identifiers: the service tokenises them and never stores these."""

    nhs_number: str  # the 10 digits
    date_of_birth: date | None
    outward_code: str | None
    postcode: str | None


@dataclass(frozen=True, slots=True)
class RegistrationRow:
    nhs_number: str  # the 10 digits
    gp_practice_code: str
    registered_from: date
    registered_to: date | None  # None: still registered


@dataclass(frozen=True, slots=True)
class PostcodeDistrictRow:
    postcode_district: str
    commissioner_code: str


@dataclass(frozen=True, slots=True)
class TariffRow:
    hrg_code: str
    hrg_name: str
    point_of_delivery: str
    price: Decimal
    # Both 0 for a row without excess bed-day pricing (blank in the file, as for DC and outpatients).
    trim_point_days: int
    excess_bed_day_price: Decimal


@dataclass(frozen=True, slots=True)
class ProviderRow:
    provider_code: str
    name: str
    market_forces_factor: Decimal


@dataclass(frozen=True, slots=True)
class SpecialisedServiceRow:
    service_code: str
    name: str
    commissioner_code: str


@dataclass(frozen=True, slots=True)
class OriginatingCommissionerRow:
    nhs_number: str  # the 10 digits
    care_basis: str  # one of CARE_BASES
    commissioner_code: str
    valid_from: date  # the file's `from`
    valid_to: date | None  # the file's `to`; None: open


@dataclass(frozen=True, slots=True)
class DevolvedDistrictRow:
    postcode_district: str
    nation: str  # one of NATIONS


@dataclass(frozen=True, slots=True)
class ContractRow:
    commissioner_code: str
    provider_code: str
    valid_from: date  # the file's `from`
    valid_to: date | None  # the file's `to`; None: open


@dataclass(frozen=True, slots=True)
class PriorApprovalRow:
    commissioner_code: str
    reference: str  # as written (trimmed); matched case-insensitively
    nhs_number: str  # the 10 digits
    valid_from: date
    valid_to: date


class _Problems:
    """Collects a file's problems; the first MAX_REPORTED_ERRORS are kept, all are counted."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.items: list[dict[str, Any]] = []
        self.total = 0

    def add(self, line: int, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_REPORTED_ERRORS:
            self.items.append({"line": line, "column": column, "message": message})

    def refuse(self, line: int, column: str | None, message: str) -> ReferenceFileError:
        self.add(line, column, message)
        return ReferenceFileError(self.dataset, self.items, self.total)

    def raise_if_any(self) -> None:
        if self.items:
            raise ReferenceFileError(self.dataset, self.items, self.total)


class _Fields:
    """Typed access to one row's trimmed values, recording a problem per bad value."""

    __slots__ = ("values", "line", "problems", "ok")

    def __init__(self, values: dict[str, str], line: int, problems: _Problems) -> None:
        self.values = values
        self.line = line
        self.problems = problems
        self.ok = True

    def bad(self, column: str, message: str) -> None:
        self.ok = False
        self.problems.add(self.line, column, message)

    def text(
        self, column: str, *, required: bool = True, identifier: bool = False, max_length: int = MAX_TEXT
    ) -> str | None:
        """The value; unless the column holds an identifier (or a date), a value shaped like an NHS
        number, a date or a postcode is refused: it would be stored and shown in the clear. A value
        longer than the table's column holds is refused too (PostgreSQL would refuse the load)."""
        value = self.values.get(column) or None
        if value is None and required:
            self.bad(column, "is missing")
        if value is not None and len(value) > max_length:
            self.bad(column, f"must be at most {max_length} characters")
            return None
        if value is not None and not identifier and carries_identifier(value):
            self.bad(column, "must not hold an NHS number, a date or a postcode")
            return None
        return value

    def code(self, column: str, *, required: bool = True) -> str | None:
        value = self.text(column, required=required, max_length=MAX_CODE)
        if value is None:
            return None
        value = value.upper()
        if not _CODE.fullmatch(value):
            self.bad(column, "must be a code of letters and digits only")
            return None
        return value

    def date(self, column: str, *, required: bool = True) -> date | None:
        value = self.text(column, required=required, identifier=True)
        if value is None:
            return None
        parsed = parse_date_uncached(value)
        if parsed is None:
            self.bad(column, "must be a real date written YYYY-MM-DD")
        return parsed

    def decimal(self, column: str, *, required: bool = True, positive: bool = False) -> Decimal | None:
        value = self.text(column, required=required, max_length=MAX_NUMBER)
        if value is None:
            return None
        if not _DECIMAL.fullmatch(value):
            self.bad(column, "must be a number such as 1234.50 (digits, an optional decimal point)")
            return None
        number = Decimal(value)
        if positive and number == 0:
            self.bad(column, "must be greater than 0")
            return None
        return number

    def integer(self, column: str, *, required: bool = True) -> int | None:
        value = self.text(column, required=required)
        if value is None:
            return None
        if not _INTEGER.fullmatch(value) or int(value) > MAX_INTEGER:
            self.bad(column, f"must be a whole number of days, 0 to {MAX_INTEGER}")
            return None
        return int(value)

    def nhs_number(self, column: str) -> str | None:
        value = self.text(column, identifier=True)
        if value is None:
            return None
        number = normalise_nhs_number(value)
        if number is None:
            self.bad(column, "is not a valid NHS number (10 digits passing the Modulus 11 check)")
        return number


def _decode(dataset: str, data: bytes, *, latin1_fallback: bool) -> io.TextIOWrapper:
    """The file as a text stream, after checking that all of it decodes: decoded a block at a time
    as it is read (a whole decoded file in a StringIO would cost four bytes a character)."""
    nul = data.find(b"\x00")
    if nul >= 0:
        # No database text column can hold a NUL (and no valid CSV of these formats has one).
        raise _Problems(dataset).refuse(data.count(b"\n", 0, nul) + 1, None, "holds a NUL character")
    encoding = "utf-8-sig"
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        if not latin1_fallback:
            line = data[: exc.start].count(b"\n") + 1
            raise _Problems(dataset).refuse(
                line, None, "holds bytes that are not UTF-8; save it as UTF-8"
            ) from None
        # The ODS extract is published in Latin-1 (Windows) as well as UTF-8; both decode here.
        encoding = "latin-1"
    return io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="")


def _records(dataset: str, text: io.TextIOWrapper) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with the file line each starts on; a quoting error refuses the file."""
    reader = csv.reader(text, strict=True)
    line = 1
    try:
        for row in reader:
            # A first value that is not blank is the common case: the full check only otherwise.
            if (row and row[0] and not row[0].isspace()) or any(value.strip() for value in row):
                yield line, row
            line = reader.line_num + 1
    except csv.Error as exc:
        raise _Problems(dataset).refuse(
            reader.line_num, None, f"is not valid CSV ({exc}); quote values holding commas or quotes"
        ) from None


def _parse_epraccur(dataset: str, text: io.TextIOWrapper) -> list[GpPracticeRow]:
    problems = _Problems(dataset)
    rows: list[GpPracticeRow] = []
    first_line_of: dict[str, int] = {}
    for line, record in _records(dataset, text):
        if len(record) != EPRACCUR_FIELDS:
            problems.add(
                line,
                None,
                f"has {len(record)} fields where the ODS epraccur layout has {EPRACCUR_FIELDS} "
                "(no header row; organisation code first)",
            )
            continue
        kept = {"field 1": record[0], "field 2": record[1], "field 13": record[12], "field 15": record[14]}
        fields = _Fields({name: value.strip() for name, value in kept.items()}, line, problems)
        code = fields.code("field 1")
        commissioner = fields.code("field 15", required=False)
        name = fields.text("field 2", required=False) or ""
        status = (fields.text("field 13", required=False, max_length=4) or "").upper()
        if code is None or not fields.ok:
            continue
        first = first_line_of.setdefault(code, line)
        if first != line:
            problems.add(line, "field 1", f"repeats practice{_named(code)} of line {first}")
            continue
        rows.append(GpPracticeRow(code, name, commissioner, status))
    if not rows and not problems.items:
        problems.add(1, None, "holds no practices")
    problems.raise_if_any()
    return rows


@dataclass(frozen=True, slots=True)
class _TableFormat:
    columns: tuple[str, ...]  # every column the header must name
    row: type  # the dataset's row class; rows travel as tuples of its fields, in order
    build: Callable[[_Fields], Any]  # the row, or None when a value was bad (problems recorded)
    key: Callable[[tuple[Any, ...]], Hashable]  # of a row's tuple
    key_columns: str  # how to name the key in a "repeats" message
    describe_key: bool  # whether the key holds no identifier and may be quoted in messages
    # For the datasets of millions of rows: given the columns' positions, a builder of the row's
    # tuple for the common, valid case, or None for anything else (the checked path then decides,
    # with its messages): it accepts exactly what `build` accepts and gives the same values.
    fast: Callable[[dict[str, int]], Callable[[list[str]], tuple[Any, ...] | None]] | None = None


def _as_tuple(row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in row.__slots__)


class RecordWatcher(Protocol):
    """Sees a file's records as the parser reads them (see `reference.fingerprints`): told the
    header row, then each record of the right width, in the order their rows are made."""

    def start(self, header: list[str]) -> None: ...

    def see(self, record: list[str]) -> None: ...


def _table_chunks(
    dataset: str,
    text: io.TextIOWrapper,
    fmt: _TableFormat,
    chunk_rows: int,
    check_repeats: bool,
    watch: RecordWatcher | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows as tuples, `chunk_rows` at a time. Once a problem is found no chunk follows: the rest
    of the file is still checked, for its first problems, and ReferenceFileError ends the iteration.
    `watch` sees each record before its row is made."""
    problems = _Problems(dataset)
    records = _records(dataset, text)
    header_line, header = next(records, (1, []))
    if not header:
        raise problems.refuse(1, None, f"is empty: the first row must be the header {','.join(fmt.columns)}")
    names = [name.strip().lower() for name in header]
    positions: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in fmt.columns:
            if name in positions:
                raise problems.refuse(header_line, name, "is named twice in the header row")
            positions[name] = index
    missing = [name for name in fmt.columns if name not in positions]
    if missing:
        raise problems.refuse(
            header_line,
            missing[0],
            f"the header row lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(needed: {', '.join(fmt.columns)})",
        )
    width = len(names)
    if watch is not None:
        watch.start(header)
    fast = fmt.fast(positions) if fmt.fast is not None else None
    key_of = fmt.key
    rows: list[tuple[Any, ...]] = []
    first_line_of: dict[Hashable, int] = {}
    seen = first_line_of.setdefault
    for line, record in records:
        if len(record) != width:
            problems.add(line, None, f"has {len(record)} fields where the header row has {width}")
            continue
        if watch is not None:
            watch.see(record)
        row = fast(record) if fast is not None else None
        if row is None:
            fields = _Fields({name: record[i].strip() for name, i in positions.items()}, line, problems)
            built = fmt.build(fields)
            if built is None or not fields.ok:
                continue
            row = _as_tuple(built)
        if not check_repeats:
            pass
        elif (first := seen(key := key_of(row), line)) != line:
            what = (
                _named("/".join(map(str, key)) if isinstance(key, tuple) else str(key))
                if fmt.describe_key
                else ""
            )
            problems.add(line, None, f"repeats the {fmt.key_columns}{what} of line {first}")
            continue
        if problems.items:
            continue  # refused already: only looking for more problems
        rows.append(row)
        if len(rows) >= chunk_rows:
            yield rows
            rows = []
    problems.raise_if_any()
    if rows:
        yield rows


_ZERO_WEIGHTED: Final = 48 * 54  # the ASCII code of 0 times the sum of the Modulus 11 weights


def _fast_nhs_number(value: str) -> bool:
    """Whether a trimmed value is ten ASCII digits passing Modulus 11 (what normalise_nhs_number
    returns unchanged); every other spelling goes the checked way. Inline: it runs once a row."""
    if len(value) != 10 or not value.isdigit() or not value.isascii():
        return False
    d = value.encode()
    check = (
        11
        - (
            d[0] * 10
            + d[1] * 9
            + d[2] * 8
            + d[3] * 7
            + d[4] * 6
            + d[5] * 5
            + d[6] * 4
            + d[7] * 3
            + d[8] * 2
            - _ZERO_WEIGHTED
        )
        % 11
    )
    return (0 if check == 11 else check) == d[9] - 48


def _fast_patient(positions: dict[str, int]) -> Callable[[list[str]], tuple[Any, ...] | None]:
    at_nhs, at_dob, at_postcode = positions["nhs_number"], positions["date_of_birth"], positions["postcode"]
    # Dates repeat across a trace: each spelling is parsed once per file (and forgotten with it).
    dates: dict[str, date] = {}

    def build(record: list[str]) -> tuple[Any, ...] | None:
        nhs_number = record[at_nhs].strip()
        if not _fast_nhs_number(nhs_number):
            return None
        raw = record[at_dob].strip()
        born: date | None = None
        if raw:
            born = dates.get(raw)
            if born is None:
                born = parse_date_uncached(raw) if len(raw) <= MAX_TEXT else None
                if born is None:
                    return None
                dates[raw] = born
        postcode = record[at_postcode].strip() or None
        if postcode is None:
            return (nhs_number, born, None, None)
        if len(postcode) > MAX_TEXT:
            return None
        # outward_code's common case inline (a postcode of letters, digits and spaces).
        compact = postcode.replace(" ", "")
        if not compact.isalnum():
            return (nhs_number, born, outward_code(postcode), postcode)
        compact = compact.upper()
        return (nhs_number, born, compact[:-3] if 5 <= len(compact) <= 7 else None, postcode)

    return build


def _fast_registration(positions: dict[str, int]) -> Callable[[list[str]], tuple[Any, ...] | None]:
    at_nhs, at_practice = positions["nhs_number"], positions["gp_practice_code"]
    at_from, at_to = positions["registered_from"], positions["registered_to"]
    dates: dict[str, date] = {}
    codes: dict[str, str] = {}

    def day(raw: str) -> date | None:
        found = dates.get(raw)
        if found is None and len(raw) <= MAX_TEXT and (found := parse_date_uncached(raw)) is not None:
            dates[raw] = found
        return found

    def build(record: list[str]) -> tuple[Any, ...] | None:
        nhs_number = record[at_nhs].strip()
        if not _fast_nhs_number(nhs_number):
            return None
        raw = record[at_practice].strip()
        practice = codes.get(raw)
        if practice is None:
            upper = raw.upper()
            if not raw or len(raw) > MAX_CODE or carries_identifier(raw) or not _CODE.fullmatch(upper):
                return None
            codes[raw] = practice = upper
        registered_from = day(record[at_from].strip())
        if registered_from is None:
            return None
        raw = record[at_to].strip()
        registered_to = None
        if raw:
            registered_to = day(raw)
            if registered_to is None or registered_to < registered_from:
                return None
        return (nhs_number, practice, registered_from, registered_to)

    return build


def _patient(f: _Fields) -> PatientRow | None:
    nhs_number = f.nhs_number("nhs_number")
    date_of_birth = f.date("date_of_birth", required=False)
    postcode = f.text("postcode", required=False, identifier=True)
    if nhs_number is None:
        return None
    return PatientRow(nhs_number, date_of_birth, outward_code(postcode), postcode)


def _registration(f: _Fields) -> RegistrationRow | None:
    nhs_number = f.nhs_number("nhs_number")
    practice = f.code("gp_practice_code")
    registered_from = f.date("registered_from")
    registered_to = f.date("registered_to", required=False)
    if nhs_number is None or practice is None or registered_from is None:
        return None
    if registered_to is not None and registered_to < registered_from:
        f.bad("registered_to", "is before registered_from (both are inclusive)")
        return None
    return RegistrationRow(nhs_number, practice, registered_from, registered_to)


def _district(f: _Fields, column: str) -> str | None:
    raw = f.text(column)
    if raw is None:
        return None
    district = "".join(raw.split()).upper()
    if not _DISTRICT.fullmatch(district):
        f.bad(column, "must be a postcode's outward code, such as TS18")
        return None
    return district


def _postcode_district(f: _Fields) -> PostcodeDistrictRow | None:
    district = _district(f, "postcode_district")
    commissioner = f.code("commissioner_code")
    if district is None or commissioner is None:
        return None
    return PostcodeDistrictRow(district, commissioner)


def _tariff(f: _Fields) -> TariffRow | None:
    hrg_code = f.code("hrg_code")
    name = f.text("hrg_name", required=False) or ""
    point_of_delivery = f.code("point_of_delivery")
    price = f.decimal("price")
    trim_point_days = f.integer("trim_point_days", required=False)
    excess_price = f.decimal("excess_bed_day_price", required=False)
    if point_of_delivery is not None and point_of_delivery not in POINTS_OF_DELIVERY:
        f.bad("point_of_delivery", f"must be one of {', '.join(sorted(POINTS_OF_DELIVERY))}")
        return None
    if hrg_code is None or point_of_delivery is None or price is None or not f.ok:
        return None
    # A trim point without an excess price (or the reverse) cannot price excess days: refuse, never guess.
    if (trim_point_days is None) != (excess_price is None):
        f.bad(
            "trim_point_days" if trim_point_days is None else "excess_bed_day_price",
            "must be given together with the other excess bed-day column, or both left blank",
        )
        return None
    return TariffRow(
        hrg_code, name, point_of_delivery, price, trim_point_days or 0, excess_price or Decimal("0")
    )


def _provider(f: _Fields) -> ProviderRow | None:
    code = f.code("provider_code")
    name = f.text("name", required=False) or ""
    factor = f.decimal("market_forces_factor", positive=True)
    if code is None or factor is None:
        return None
    return ProviderRow(code, name, factor)


def _specialised_service(f: _Fields) -> SpecialisedServiceRow | None:
    code = f.code("service_code")
    name = f.text("name", required=False) or ""
    commissioner = f.code("commissioner_code")
    if code is None or commissioner is None:
        return None
    return SpecialisedServiceRow(code, name, commissioner)


def _period(f: _Fields, start: str, end: str, *, end_required: bool) -> tuple[date | None, date | None]:
    """Two inclusive dates; an end before the start is refused."""
    valid_from = f.date(start)
    valid_to = f.date(end, required=end_required)
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        f.bad(end, f"is before {start} (both are inclusive)")
        return None, None
    return valid_from, valid_to


def _one_of(f: _Fields, column: str, allowed: frozenset[str]) -> str | None:
    value = f.code(column)
    if value is not None and value not in allowed:
        f.bad(column, f"must be one of {', '.join(sorted(allowed))}")
        return None
    return value


def _originating_commissioner(f: _Fields) -> OriginatingCommissionerRow | None:
    nhs_number = f.nhs_number("nhs_number")
    care_basis = _one_of(f, "care_basis", CARE_BASES)
    commissioner = f.code("commissioner_code")
    valid_from, valid_to = _period(f, "from", "to", end_required=False)
    if nhs_number is None or care_basis is None or commissioner is None or valid_from is None:
        return None
    return OriginatingCommissionerRow(nhs_number, care_basis, commissioner, valid_from, valid_to)


def _devolved_district(f: _Fields) -> DevolvedDistrictRow | None:
    district = _district(f, "postcode_district")
    nation = _one_of(f, "nation", NATIONS)
    if district is None or nation is None:
        return None
    return DevolvedDistrictRow(district, nation)


def _contract(f: _Fields) -> ContractRow | None:
    commissioner = f.code("commissioner_code")
    provider = f.code("provider_code")
    valid_from, valid_to = _period(f, "from", "to", end_required=False)
    if commissioner is None or provider is None or valid_from is None:
        return None
    return ContractRow(commissioner, provider, valid_from, valid_to)


def _prior_approval(f: _Fields) -> PriorApprovalRow | None:
    commissioner = f.code("commissioner_code")
    reference = f.text("reference", max_length=MAX_REFERENCE)
    nhs_number = f.nhs_number("nhs_number")
    valid_from, valid_to = _period(f, "valid_from", "valid_to", end_required=True)
    if (
        commissioner is None
        or reference is None
        or nhs_number is None
        or valid_from is None
        or valid_to is None
    ):
        return None
    return PriorApprovalRow(commissioner, reference, nhs_number, valid_from, valid_to)


_TABLES: Final[dict[str, _TableFormat]] = {
    "patients": _TableFormat(
        ("nhs_number", "date_of_birth", "postcode"),
        PatientRow,
        _patient,
        lambda r: r[0],
        "nhs_number",
        False,
        _fast_patient,
    ),
    "registrations": _TableFormat(
        ("nhs_number", "gp_practice_code", "registered_from", "registered_to"),
        RegistrationRow,
        _registration,
        lambda r: r[:3],
        "nhs_number, gp_practice_code and registered_from",
        False,
        _fast_registration,
    ),
    "postcode-districts": _TableFormat(
        ("postcode_district", "commissioner_code"),
        PostcodeDistrictRow,
        _postcode_district,
        lambda r: r[0],
        "postcode_district",
        True,
    ),
    "tariff": _TableFormat(
        ("hrg_code", "hrg_name", "point_of_delivery", "price", "trim_point_days", "excess_bed_day_price"),
        TariffRow,
        _tariff,
        lambda r: (r[0], r[2]),
        "hrg_code and point_of_delivery",
        True,
    ),
    "providers": _TableFormat(
        ("provider_code", "name", "market_forces_factor"),
        ProviderRow,
        _provider,
        lambda r: r[0],
        "provider_code",
        True,
    ),
    "specialised-services": _TableFormat(
        ("service_code", "name", "commissioner_code"),
        SpecialisedServiceRow,
        _specialised_service,
        lambda r: r[0],
        "service_code",
        True,
    ),
    "originating-commissioners": _TableFormat(
        ("nhs_number", "care_basis", "commissioner_code", "from", "to"),
        OriginatingCommissionerRow,
        _originating_commissioner,
        lambda r: r[:4],
        "nhs_number, care_basis, commissioner_code and from",
        False,
    ),
    "devolved-districts": _TableFormat(
        ("postcode_district", "nation"),
        DevolvedDistrictRow,
        _devolved_district,
        lambda r: r[0],
        "postcode_district",
        True,
    ),
    "contracts": _TableFormat(
        ("commissioner_code", "provider_code", "from", "to"),
        ContractRow,
        _contract,
        lambda r: r[:3],
        "commissioner_code, provider_code and from",
        True,
    ),
    "prior-approvals": _TableFormat(
        ("commissioner_code", "reference", "nhs_number", "valid_from", "valid_to"),
        PriorApprovalRow,
        _prior_approval,
        lambda r: (r[0], r[1].upper(), r[2], r[3]),
        "commissioner_code, reference, nhs_number and valid_from",
        False,
    ),
}


def parse_dataset(dataset: str, data: bytes) -> list[Any]:
    """The rows of one reference file, typed by dataset; ReferenceFileError refuses a bad file whole.

    `gp-practices` is the ODS epraccur extract: no header, 27 fields, UTF-8 or Latin-1, every row
    whatever its status. The others have a header row: columns in any order (names trimmed,
    case-insensitive), extra columns ignored, every documented column required; codes upper-cased;
    two rows with the same key (practice, NHS number, HRG × point of delivery, ...) refuse the file.
    A header row alone is a dataset with no rows (for `contracts`, unlike no dataset at all, it
    means no commissioner holds any contract).
    """
    chunks = list(parse_chunks(dataset, data))  # raises first for an unknown dataset or a bad file
    row = ROW_TYPES[dataset]
    return [row(*t) for chunk in chunks for t in chunk]


def parse_chunks(
    dataset: str,
    data: bytes,
    chunk_rows: int = 200_000,
    *,
    check_repeats: bool = True,
    watch: RecordWatcher | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """`parse_dataset` for files of millions of rows: the rows as tuples of their row type's fields
    (`ROW_TYPES`), `chunk_rows` at a time, as the file is read. The whole file is still checked
    before it is accepted: no chunk follows the first problem, and ReferenceFileError (with the
    file's first problems, as `parse_dataset` gives them) ends the iteration. A caller keeps nothing
    of the chunks it was given before that error. `check_repeats=False` leaves finding two rows of
    one key to the caller (who must then parse again with it to refuse the file as it should be).
    `watch` (a file with a header row) sees each record before its row is made."""
    if dataset not in DATASETS:
        # Not quoted: the name is the caller's text (a path segment).
        raise UnknownDatasetError(f"Unknown reference dataset; use one of {', '.join(DATASETS)}.")
    if not data.strip():
        raise _Problems(dataset).refuse(1, None, "is empty")
    if watch is not None and dataset == "gp-practices":
        raise ValueError("only the records of a file with a header row can be watched")
    if dataset == "gp-practices":
        rows = [_as_tuple(r) for r in _parse_epraccur(dataset, _decode(dataset, data, latin1_fallback=True))]
        for start in range(0, len(rows), chunk_rows):
            yield rows[start : start + chunk_rows]
        return
    yield from _table_chunks(
        dataset,
        _decode(dataset, data, latin1_fallback=False),
        _TABLES[dataset],
        chunk_rows,
        check_repeats,
        watch,
    )


# dataset → the type of its rows (`parse_chunks` gives their fields as tuples, in this order).
ROW_TYPES: Final[dict[str, type]] = {
    "gp-practices": GpPracticeRow,
    **{dataset: fmt.row for dataset, fmt in _TABLES.items()},
}
