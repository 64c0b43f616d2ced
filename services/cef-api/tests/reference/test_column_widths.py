"""A reference value wider than the table's column (a long code, name or number, a count of days
beyond INTEGER) is refused with the file, naming line and column: never a database error on load."""

from __future__ import annotations

import pytest
from api_support import Api

from cef_api.reference.parsers import ReferenceFileError, parse_dataset

TARIFF = "hrg_code,hrg_name,point_of_delivery,price,trim_point_days,excess_bed_day_price\n"
PROVIDERS = "provider_code,name,market_forces_factor\n"

TOO_WIDE = [
    ("tariff", TARIFF + "DD73C,HRG,EL,2970.32,99999999999,281.7\n", "trim_point_days"),
    ("tariff", TARIFF + "DD73C,HRG,EL,2970.320000000000000000001,12,281.7\n", "price"),
    ("tariff", TARIFF + "DD73C," + "x" * 301 + ",EL,2970.32,12,281.7\n", "hrg_name"),
    ("tariff", TARIFF + "DD73CDD73CDD73C,HRG,EL,2970.32,12,281.7\n", "hrg_code"),
    ("providers", PROVIDERS + "RTR," + "n" * 201 + ",1.0\n", "name"),
    ("providers", PROVIDERS + "RTRRTRRTRRTRR,n,1.0\n", "provider_code"),
    ("providers", PROVIDERS + "RTR,n,1.00000000000000000000001\n", "market_forces_factor"),
]


@pytest.mark.parametrize(("dataset", "text", "column"), TOO_WIDE)
def test_a_value_wider_than_its_column_is_refused_naming_it(dataset: str, text: str, column: str) -> None:
    with pytest.raises(ReferenceFileError) as info:
        parse_dataset(dataset, text.encode())
    assert [(e["line"], e["column"]) for e in info.value.extra["errors"]] == [(2, column)]


def test_the_widest_values_still_load() -> None:
    # Nine digits: ten in a row are refused as shaped like an NHS number before their size counts.
    price = "1" * 17 + ".50"
    text = TARIFF + f"DD73CDD73CDD,{'x' * 200},EL,{price},999999999,281.7\n"
    rows = parse_dataset("tariff", text.encode())
    assert (rows[0].hrg_code, rows[0].trim_point_days) == ("DD73CDD73CDD", 999_999_999)


@pytest.mark.parametrize(("dataset", "text", "column"), TOO_WIDE[:2] + TOO_WIDE[4:5])
async def test_the_api_answers_422_on_either_database(api: Api, dataset: str, text: str, column: str) -> None:
    r = await api.client.put(
        f"/v1/reference/{dataset}",
        content=text.encode(),
        headers={**api.h("reference:write"), "Content-Type": "text/csv"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "reference-file-invalid"
    assert r.json()["errors"][0]["column"] == column
