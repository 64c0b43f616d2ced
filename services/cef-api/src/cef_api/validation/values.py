"""Parsers for the values of backing data and reference files: strict dates, amounts, codes."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Final

POINTS_OF_DELIVERY: Final = frozenset({"EL", "NEL", "DC", "OPFA", "OPFU"})
# Spells: the points of delivery priced with excess bed days.
SPELL_POINTS_OF_DELIVERY: Final = frozenset({"EL", "NEL"})
# v2 optional columns, compared exactly after trimming and upper-casing (`2` is not `02`).
# NHS Data Dictionary ADMINISTRATIVE CATEGORY CODE: NHS, private, amenity, category II patient.
ADMINISTRATIVE_CATEGORIES: Final = frozenset({"01", "02", "03", "04"})
PRIVATE_PATIENT_CATEGORY: Final = "02"
# OVERSEAS VISITOR STATUS CLASSIFICATION: exempt, hotel fees only, all fees, rate not known,
# not applicable, not known.
OVERSEAS_VISITOR_STATUSES: Final = frozenset({"1", "2", "3", "4", "8", "9"})
CHARGEABLE_OVERSEAS_VISITOR_STATUSES: Final = frozenset({"2", "3", "4"})
# Mental Health Act s117 aftercare; NHS continuing healthcare.
CARE_BASES: Final = frozenset({"S117", "CHC"})

# fullmatch, never `$`: `$` would also match before a trailing newline.
AMOUNT_PATTERN: Final = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")
_DATE_SHAPE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Backing data repeats the same dates and (tariff-derived) amounts; bounded caches save parsing them
# on the hot path. Never cache identifiers (NHS numbers, postcodes) like this: they would outlive
# the request in process memory.
_DATE_CACHE: dict[str, date | None] = {}
_AMOUNT_CACHE: dict[str, Decimal | None] = {}
_CACHE_LIMIT: Final = 100_000


def parse_date(value: str | None) -> date | None:
    """A `YYYY-MM-DD` real calendar date, or None.

    Stricter than `date.fromisoformat`, which in 3.11 also takes `20190701` and `2019-07-01T00:00`
    shapes elsewhere; the shape is checked first so only `YYYY-MM-DD` reaches it. Cached: use
    `parse_date_uncached` for dates of birth.
    """
    if value is None:
        return None
    try:
        return _DATE_CACHE[value]
    except KeyError:
        pass
    parsed = parse_date_uncached(value)
    if len(_DATE_CACHE) >= _CACHE_LIMIT:
        _DATE_CACHE.clear()
    _DATE_CACHE[value] = parsed
    return parsed


def parse_date_uncached(value: str | None) -> date | None:
    """As parse_date, uncached: for dates of birth, which must not linger in memory."""
    if value is None or _DATE_SHAPE.fullmatch(value) is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def parse_amount(value: str | None) -> Decimal | None:
    """An amount in pounds matching `^[0-9]+(\\.[0-9]{1,2})?$`, or None (`£1,234.50`, `-5`, `1e3`, `.5`)."""
    if value is None:
        return None
    try:
        return _AMOUNT_CACHE[value]
    except KeyError:
        pass
    parsed = Decimal(value) if AMOUNT_PATTERN.fullmatch(value) is not None else None
    if len(_AMOUNT_CACHE) >= _CACHE_LIMIT:
        _AMOUNT_CACHE.clear()
    _AMOUNT_CACHE[value] = parsed
    return parsed


_CODE_CACHE: dict[str, str] = {}


def upper_code(value: str | None) -> str | None:
    """A code upper-cased (codes compare case-insensitively), one shared string per distinct code:
    HRG codes and points of delivery repeat on every line. Only for codes, never identifiers."""
    if value is None:
        return None
    code = _CODE_CACHE.get(value)
    if code is None:
        if len(_CODE_CACHE) >= _CACHE_LIMIT:
            _CODE_CACHE.clear()
        code = _CODE_CACHE[value] = value.upper()
    return code


def clean(value: str | None) -> str | None:
    """Trimmed of surrounding whitespace; empty is missing."""
    if value is None:
        return None
    value = value.strip()
    return value or None
