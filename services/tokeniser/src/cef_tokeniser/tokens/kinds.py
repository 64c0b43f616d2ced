"""The kinds of identifier the tokeniser takes, and how each is standardised before tokenising.

Every accepted spelling of a value standardises to one string, so it gets one token. Each
normaliser works on a whole batch in one loop: the per-value cost is the service's throughput."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from nhs_number.standardise import standardise_format

Kind = Literal["nhs_number", "date_of_birth", "postcode"]
KINDS: tuple[Kind, ...] = ("nhs_number", "date_of_birth", "postcode")

MISSING = "missing"
NOT_A_STRING = "not_a_string"
INVALID_CODE: dict[str, str] = {
    "nhs_number": "nhs_number_invalid",
    "date_of_birth": "date_invalid",
    "postcode": "postcode_invalid",
}

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_ZERO_WEIGHTED = 48 * sum(_WEIGHTS)

# A UK postcode's shape, kept lenient on letters: real addresses carry postcodes that the strict
# Royal Mail letter rules refuse (e.g. `LA14 2IB` in the ODS extract, pseudo-postcodes like `ZZ99 3VZ`).
_POSTCODE = re.compile(r"[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}")
_WHITESPACE = re.compile(r"\s+")


@dataclass
class Standardised:
    """A batch standardised: the values (None where invalid), the errors, and for postcodes the district."""

    values: list[str | None]
    errors: list[tuple[int, str]]
    outward_codes: list[str | None] | None = None


def _nhs_digits_valid(digits: str) -> bool:
    """Modulus 11 over ten ASCII digits, exactly as the validation contract defines a valid NHS number.

    Equal to the nhs-number package's `calculate_checksum` (tests check it value for value), and
    deliberately not its `is_valid`, which also refuses Scottish CHI numbers whose first six digits
    are not a date: the CEF accepts every Modulus 11 number, so the tokeniser must tokenise them all."""
    b = digits.encode()
    total = (
        b[0] * 10 + b[1] * 9 + b[2] * 8 + b[3] * 7 + b[4] * 6 + b[5] * 5 + b[6] * 4 + b[7] * 3 + b[8] * 2
    ) - _ZERO_WEIGHTED
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == b[9] - 48


def standardise_nhs_number(value: str) -> str | None:
    """The ten digits of a valid NHS number written as 10 digits or 3-3-4 with spaces or hyphens."""
    s = value.strip()
    if len(s) != 10 or not (s.isascii() and s.isdigit()):
        # The other accepted forms (`943 476 5919`, `943-476-5919`) are the package's to parse.
        if not s.isascii():
            return None
        s = standardise_format(s)
        if not s:
            return None
    return s if _nhs_digits_valid(s) else None


def standardise_date_of_birth(value: str) -> str | None:
    """An ISO calendar date, `YYYY-MM-DD`."""
    s = value.strip()
    if len(s) != 10 or s[4] != "-" or s[7] != "-" or not s.isascii():
        return None
    try:
        return date.fromisoformat(s).isoformat()
    except ValueError:
        return None


def standardise_postcode(value: str) -> str | None:
    """Upper case with one space before the inward code: `ts181hu` → `TS18 1HU`."""
    s = _WHITESPACE.sub("", value).upper()
    if not s.isascii() or _POSTCODE.fullmatch(s) is None:
        return None
    return f"{s[:-3]} {s[-3:]}"


STANDARDISERS: dict[str, Callable[[str], str | None]] = {
    "nhs_number": standardise_nhs_number,
    "date_of_birth": standardise_date_of_birth,
    "postcode": standardise_postcode,
}


def _standardise_nhs_batch(raw: list[object]) -> Standardised:
    """standardise_batch for NHS numbers, with the common case (ten ASCII digits) checked
    inline: at 100,000 values a call per value is a third of the service's time."""
    values: list[str | None] = []
    errors: list[tuple[int, str]] = []
    append = values.append
    slow = standardise_nhs_number
    for i, v in enumerate(raw):
        if type(v) is str:
            if len(v) == 10 and v[0] in "456789" and v.isascii() and v.isdigit():
                b = v.encode()
                check = (
                    11
                    - (
                        b[0] * 10
                        + b[1] * 9
                        + b[2] * 8
                        + b[3] * 7
                        + b[4] * 6
                        + b[5] * 5
                        + b[6] * 4
                        + b[7] * 3
                        + b[8] * 2
                        - _ZERO_WEIGHTED
                    )
                    % 11
                )
                if check == 11:
                    check = 0
                if check == b[9] - 48:
                    append(v)
                    continue
                errors.append((i, "nhs_number_invalid"))
                append(None)
                continue
            s = slow(v)
            if s is None:
                errors.append((i, MISSING if not v.strip() else "nhs_number_invalid"))
            append(s)
        else:
            errors.append((i, MISSING if v is None else NOT_A_STRING))
            append(None)
    return Standardised(values, errors)


def standardise_batch(kind: str, raw: list[object]) -> Standardised:
    """Standardises `raw` values of `kind`; an invalid value becomes None with an error at its index."""
    if kind == "nhs_number":
        return _standardise_nhs_batch(raw)
    standardise = STANDARDISERS[kind]
    invalid = INVALID_CODE[kind]
    values: list[str | None] = []
    errors: list[tuple[int, str]] = []
    append = values.append
    for i, v in enumerate(raw):
        if type(v) is str:
            s = standardise(v)
            if s is None:
                errors.append((i, MISSING if not v.strip() else invalid))
            append(s)
        else:
            errors.append((i, MISSING if v is None else NOT_A_STRING))
            append(None)
    result = Standardised(values, errors)
    if kind == "postcode":
        result.outward_codes = [None if v is None else v[:-4] for v in values]
    return result
