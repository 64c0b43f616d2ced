"""NHS number normalisation: the accepted written forms and the Modulus 11 check digit."""

from __future__ import annotations

import re

# Ten digits, or 3-3-4 digits with one kind of single separator throughout. The spec says "separated
# by single spaces or by single hyphens", read literally as one or the other: the back-reference
# refuses a mixed `943 476-5919`. `[0-9]` (not `\d`) keeps non-ASCII digits out.
_NHS_NUMBER = re.compile(r"([0-9]{3})([ -]?)([0-9]{3})\2([0-9]{4})")

# Sum of the Modulus 11 weights 10..2: subtracting 48 * 54 turns the ASCII codes into digit values.
_ASCII_ZERO_TIMES_WEIGHTS = 48 * 54


def normalise_nhs_number(value: str | None) -> str | None:
    """The valid NHS number's 10 digits, or None when missing, of another shape or failing Modulus 11.

    Surrounding whitespace is trimmed first; separators are only accepted between the 3-3-4 groups.
    """
    if value is None:
        return None
    value = value.strip()
    if len(value) == 10 and value.isdigit() and value.isascii():
        return value if has_valid_check_digit(value) else None
    match = _NHS_NUMBER.fullmatch(value)
    if match is None:
        return None
    digits = match[1] + match[3] + match[4]
    return digits if has_valid_check_digit(digits) else None


def has_valid_check_digit(digits: str) -> bool:
    """Modulus 11 on ten ASCII digits: weights 10..2 on the first nine, 11 − sum mod 11, 11 → 0, 10 bad."""
    d = digits.encode("ascii")
    total = (
        d[0] * 10 + d[1] * 9 + d[2] * 8 + d[3] * 7 + d[4] * 6 + d[5] * 5 + d[6] * 4 + d[7] * 3 + d[8] * 2
    ) - _ASCII_ZERO_TIMES_WEIGHTS
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == d[9] - 48
