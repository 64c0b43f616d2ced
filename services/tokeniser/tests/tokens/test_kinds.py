"""Standardising NHS numbers, dates of birth and postcodes: every accepted form gives one value."""

from __future__ import annotations

import random
import secrets

import nhs_number
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cef_tokeniser.crypto import DataKey
from cef_tokeniser.tokens.kinds import (
    standardise_batch,
    standardise_date_of_birth,
    standardise_nhs_number,
    standardise_postcode,
)

KEY = DataKey.from_bytes(secrets.token_bytes(32), kind="nhs_number", context="cef", version=1)


def _check_digit(nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    return None if check == 10 else (0 if check == 11 else check)


# Valid NHS numbers in the England/Wales ranges, built from nine digits and their check digit.
valid_nhs_numbers = (
    st.tuples(st.sampled_from("46789"), st.text("0123456789", min_size=8, max_size=8))
    .map(lambda t: t[0] + t[1])
    .filter(lambda nine: _check_digit(nine) is not None)
    .map(lambda nine: nine + str(_check_digit(nine)))
)
padding = st.text(" \t", max_size=3)


@given(
    number=valid_nhs_numbers,
    left=padding,
    right=padding,
    form=st.sampled_from(["plain", "spaces", "hyphens"]),
)
def test_every_accepted_form_of_an_nhs_number_gives_the_same_token(
    number: str, left: str, right: str, form: str
) -> None:
    written = {
        "plain": number,
        "spaces": f"{number[:3]} {number[3:6]} {number[6:]}",
        "hyphens": f"{number[:3]}-{number[3:6]}-{number[6:]}",
    }[form]
    assert standardise_nhs_number(left + written + right) == number
    assert KEY.token(standardise_nhs_number(left + written + right) or "") == KEY.token(number)


def modulus_11_valid(digits: str) -> bool:
    """The contract's rule through the nhs-number package's own check-digit arithmetic."""
    check = nhs_number.calculate_checksum(digits[:9])
    return check is not None and check != 10 and check == int(digits[9])


def test_chi_range_numbers_need_only_modulus_11() -> None:
    # The package's is_valid also wants a date in a Scottish CHI number's first six digits; the
    # validation contract does not, and the CEF accepts such numbers, so the tokeniser must too.
    for number in ("1000000001", "1637259727", "0124729223"):
        assert not nhs_number.is_valid(number)
        assert standardise_nhs_number(number) == number


@settings(max_examples=2000)
@given(digits=st.text("0123456789", min_size=10, max_size=10))
def test_fast_validity_check_agrees_with_the_nhs_number_package(digits: str) -> None:
    assert (standardise_nhs_number(digits) is not None) == modulus_11_valid(digits)


def test_validity_agrees_with_the_package_over_every_range() -> None:
    rng = random.Random(20261123)
    # Random numbers (about one in eleven valid) and the package's own valid numbers, all regions.
    numbers = [f"{rng.randrange(10**10):010d}" for _ in range(50_000)]
    for region in nhs_number.REGIONS.values():
        numbers += nhs_number.generate(for_region=region, quantity=200)
    numbers += ["0101010000", "3112999999", "3113000000", "4000000004", "9999999999", "0000000000"]
    disagreements = [n for n in numbers if (standardise_nhs_number(n) is not None) != modulus_11_valid(n)]
    assert disagreements == []
    assert sum(standardise_nhs_number(n) is not None for n in numbers) > 1000


@pytest.mark.parametrize(
    "value",
    [
        "9434765918",  # wrong check digit
        "943476591",
        "94347659190",
        "943 476 591 9",
        "943  476 5919",
        "943-476 5919",
        "943.476.5919",
        "９４３４７６５９１９",  # full-width digits: \d matches them, an NHS number never has them
        "٩٤٣٤٧٦٥٩١٩",
        "abcdefghij",
        "1000000000",  # Modulus 11 wants check digit 1 here
        "3102990000",  # and 2 here
    ],
)
def test_invalid_nhs_numbers(value: str) -> None:
    assert standardise_nhs_number(value) is None


@given(day=st.dates(), left=padding, right=padding)
def test_dates_of_birth_are_iso_dates(day: object, left: str, right: str) -> None:
    text = day.isoformat()  # type: ignore[attr-defined]
    assert standardise_date_of_birth(left + text + right) == text


@pytest.mark.parametrize(
    "value",
    [
        "2023-02-29",
        "2024-13-01",
        "2024-00-10",
        "20240101",
        "01/02/2003",
        "2024-1-01",
        "2024-01-01T00:00",
        "2024-W01-1",
        "２０２４-01-01",
        "2024/01/01",
        "",
        "  ",
    ],
)
def test_invalid_dates_of_birth(value: str) -> None:
    assert standardise_date_of_birth(value) is None


outward_codes = st.sampled_from(
    ["TS18", "TS1", "LS1", "M1", "W1A", "EC1A", "SW1A", "B33", "CR2", "ZZ99", "LA14"]
)
inward_codes = st.tuples(
    st.sampled_from("0123456789"), st.text("ABDEFGHJLNPQRSTUWXYZ", min_size=2, max_size=2)
)


@given(
    outward=outward_codes,
    inward=inward_codes,
    space=st.sampled_from(["", " ", "  ", "\t"]),
    case=st.sampled_from(["upper", "lower", "mixed"]),
    left=padding,
    right=padding,
)
def test_every_accepted_form_of_a_postcode_gives_the_same_token(
    outward: str, inward: tuple[str, str], space: str, case: str, left: str, right: str
) -> None:
    canonical = f"{outward} {inward[0]}{inward[1]}"
    written = f"{outward}{space}{inward[0]}{inward[1]}"
    written = {
        "upper": written,
        "lower": written.lower(),
        "mixed": written.swapcase() if len(written) % 2 else written.lower().title(),
    }[case]
    assert standardise_postcode(left + written + right) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "",
        "TS18",
        "1HU",
        "TS18 1H",
        "TS181HUX",
        "18TS 1HU",
        "TS18 HU1",
        "T$18 1HU",
        "ÄS18 1HU",
        "TS18-1HU",
        "TSX18 1HU",
    ],
)
def test_invalid_postcodes(value: str) -> None:
    assert standardise_postcode(value) is None


def test_batch_reports_each_invalid_value_with_its_index_and_code() -> None:
    result = standardise_batch(
        "nhs_number", ["9434765919", None, "", "  ", "123", 9434765919, "943 476 5919"]
    )
    assert result.values == ["9434765919", None, None, None, None, None, "9434765919"]
    assert result.errors == [
        (1, "missing"),
        (2, "missing"),
        (3, "missing"),
        (4, "nhs_number_invalid"),
        (5, "not_a_string"),
    ]
    assert result.outward_codes is None
    dates = standardise_batch("date_of_birth", ["1970-01-01", "1970-02-30", None])
    assert dates.errors == [(1, "date_invalid"), (2, "missing")]
    postcodes = standardise_batch("postcode", ["ts181hu", "nope", "sw1a 1aa", None])
    assert postcodes.values == ["TS18 1HU", None, "SW1A 1AA", None]
    assert postcodes.outward_codes == ["TS18", None, "SW1A", None]
    assert postcodes.errors == [(1, "postcode_invalid"), (3, "missing")]


@settings(max_examples=500)
@given(
    values=st.lists(
        st.one_of(
            st.text("0123456789", min_size=10, max_size=10),
            valid_nhs_numbers,
            st.text("0123456789 -", max_size=14),
            st.text(max_size=12),
            st.none(),
        ),
        max_size=30,
    )
)
def test_the_batch_path_agrees_with_the_single_value_path(values: list[str | None]) -> None:
    batch = standardise_batch("nhs_number", values)
    assert batch.values == [None if v is None else standardise_nhs_number(v) for v in values]
    for v, s in zip(values, batch.values, strict=True):
        if v is not None and len(v) == 10 and v.isascii() and v.isdigit():
            assert (s is not None) == modulus_11_valid(v)
    assert [i for i, _ in batch.errors] == [i for i, s in enumerate(batch.values) if s is None]
