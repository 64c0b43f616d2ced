"""NHS numbers, postcodes, dates and amounts: the value rules every check builds on."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cef_api.validation.nhs_number import normalise_nhs_number
from cef_api.validation.postcode import outward_code
from cef_api.validation.values import parse_amount, parse_date

from .factories import with_check_digit

VALID = "9434765919"  # the spec's example


def _modulus_11(digits: str) -> bool:
    """Independent statement of the spec's check: weights 10..2, 11 - sum mod 11, 11 → 0, 10 invalid."""
    total = sum(int(digits[i]) * (10 - i) for i in range(9))
    check = 11 - (total % 11)
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


@pytest.mark.parametrize(
    "written",
    [VALID, "943 476 5919", "943-476-5919", "  9434765919 ", "\t943 476 5919\u00a0", " 943-476-5919"],
)
def test_accepted_forms_normalise_to_the_ten_digits(written: str) -> None:
    assert normalise_nhs_number(written) == VALID


@pytest.mark.parametrize(
    "written",
    [
        None,
        "",
        "   ",
        "943 476-5919",  # mixed separators: "spaces or hyphens", read as one kind throughout
        "943-476 5919",
        "943  476 5919",  # double space
        "943--476-5919",
        "9434 765 919",  # wrong grouping
        "94347659",
        "943476591",
        "94347659190",
        "943476591X",
        "9434765918",  # wrong check digit
        "943.476.5919",
        "943_476_5919",
        "٩٤٣٤٧٦٥٩١٩",  # Arabic-Indic digits are digits to str.isdigit, not to the spec
        "+449434765919",
    ],
)
def test_other_shapes_and_bad_check_digits_are_invalid(written: str | None) -> None:
    assert normalise_nhs_number(written) is None


def test_check_digit_of_ten_is_invalid_and_eleven_means_zero() -> None:
    ten = next(f"{n:09d}" for n in range(999_000_000, 999_001_000) if with_check_digit(f"{n:09d}") is None)
    assert all(normalise_nhs_number(ten + str(d)) is None for d in range(10))
    zero = next(
        number
        for n in range(999_000_000, 999_100_000)
        if (number := with_check_digit(f"{n:09d}")) and number[-1] == "0"
    )
    assert normalise_nhs_number(zero) == zero


@given(st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_ten_digits_valid_exactly_when_modulus_11_holds(digits: str) -> None:
    assert (normalise_nhs_number(digits) == digits) is _modulus_11(digits)
    assert normalise_nhs_number(digits) in (digits, None)


@given(
    st.integers(min_value=0, max_value=999_999_999),
    st.sampled_from(["", " ", "-"]),
    st.text(" \t", max_size=3),
)
def test_every_accepted_form_gives_the_same_result(n: int, separator: str, blanks: str) -> None:
    digits = with_check_digit(f"{n:09d}")
    if digits is None:
        return
    written = blanks + separator.join((digits[:3], digits[3:6], digits[6:])) + blanks
    assert normalise_nhs_number(written) == normalise_nhs_number(digits) == digits


@pytest.mark.parametrize(
    ("postcode", "expected"),
    [
        ("ts181hu", "TS18"),
        ("TS18 1HU", "TS18"),
        ("  ts18   1hu ", "TS18"),
        ("ts18\t1hu", "TS18"),
        ("M1 1AA", "M1"),
        ("m11aa", "M1"),
        ("EC1A 1BB", "EC1A"),
        ("SW1A1AA", "SW1A"),
        ("M11A", None),  # 4 characters: too short
        ("TS181HUX9", None),  # 9 characters: too long
        ("TS18 1HUX", None),  # 8 characters once the space is gone
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_outward_code(postcode: str | None, expected: str | None) -> None:
    assert outward_code(postcode) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2019-07-01", date(2019, 7, 1)),
        ("2020-02-29", date(2020, 2, 29)),
        ("2019-02-29", None),
        ("2019-13-40", None),
        ("2019-04-31", None),
        ("0000-01-01", None),
        ("20190701", None),  # accepted by date.fromisoformat in 3.11, not by the spec
        ("2019-07-01T00:00", None),
        ("2019-07-01 00:00", None),
        ("2019-W27-1", None),
        ("2019-7-1", None),
        ("01/07/2019", None),
        ("n/a", None),
        ("XX", None),
        ("２０１９-07-01", None),  # full-width digits
        (None, None),
    ],
)
def test_parse_date_is_strict(value: str | None, expected: date | None) -> None:
    assert parse_date(value) == expected
    assert parse_date(value) == expected  # and again, from the cache


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1234", "1234"), ("1234.5", "1234.5"), ("1234.50", "1234.50"), ("0", "0"), ("0.01", "0.01")],
)
def test_amounts_matching_the_pattern(value: str, expected: str) -> None:
    assert parse_amount(value) == Decimal(expected)


@pytest.mark.parametrize(
    "value",
    [
        "£1,234.50",
        "1,234.50",
        "-5",
        "+5",
        "1e3",
        ".5",
        "5.",
        "1.234",
        "1234.50\n",
        "1 234",
        "NaN",
        "Infinity",
        "١٢",
        "XX",
        "n/a",
    ],
)
def test_amounts_not_matching_the_pattern(value: str) -> None:
    assert parse_amount(value) is None
