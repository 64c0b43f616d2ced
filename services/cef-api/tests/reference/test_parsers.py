"""The reference file parsers: formats, row checks, whole-file refusal with located errors."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from cef_api.reference.parsers import (
    DATASETS,
    FILENAMES,
    LOAD_ORDER,
    MAX_REPORTED_ERRORS,
    GpPracticeRow,
    PatientRow,
    PostcodeDistrictRow,
    ProviderRow,
    ReferenceFileError,
    RegistrationRow,
    SpecialisedServiceRow,
    TariffRow,
    UnknownDatasetError,
    parse_dataset,
)
from cef_common.testing import SHARED_DIR

EPRACCUR = SHARED_DIR / "data/reference/epraccur.csv"
SAMPLE = SHARED_DIR / "data/sample/reference"
SAMPLE_V2 = SHARED_DIR / "data/sample-v2/reference"
VALID = "9434765919"
OTHER = "9990394083"


def epraccur_row(
    code: str = "A81001", commissioner: str = "00K", status: str = "A", name: str = "THE SURGERY"
) -> str:
    fields = [
        code,
        name,
        "Y63",
        "Q74",
        "",
        "",
        "",
        "",
        "",
        "TS18 1HU",
        "19740401",
        "",
        status,
        "B",
        commissioner,
    ]
    fields += [""] * (27 - len(fields))
    return ",".join(f'"{f}"' for f in fields)


def refused(dataset: str, text: str | bytes) -> ReferenceFileError:
    with pytest.raises(ReferenceFileError) as info:
        parse_dataset(dataset, text.encode() if isinstance(text, str) else text)
    error = info.value
    assert error.status == 422
    assert error.code == "reference-file-invalid"
    assert error.extra["dataset"] == dataset
    assert error.extra["errors"]
    return error


def test_datasets_and_file_names() -> None:
    assert DATASETS == (
        "gp-practices",
        "patients",
        "registrations",
        "postcode-districts",
        "tariff",
        "providers",
        "specialised-services",
        "originating-commissioners",
        "devolved-districts",
        "contracts",
        "prior-approvals",
    )
    assert set(FILENAMES) == set(DATASETS)
    # A directory is loaded in an order that names every dataset once.
    assert sorted(LOAD_ORDER) == sorted(DATASETS)
    assert FILENAMES["prior-approvals"] == "prior_approvals.csv"
    assert FILENAMES["gp-practices"] == "epraccur.csv"
    with pytest.raises(UnknownDatasetError):
        parse_dataset("practices", b"x")


# -- gp-practices (epraccur) -----------------------------------------------------------------------


def test_epraccur_fields_1_2_13_15_every_status() -> None:
    text = "\r\n".join(
        [
            epraccur_row("a81001", "00k", "A", "THE DENSHAM SURGERY"),
            epraccur_row("A81003", "00K", "C", "VICTORIA, MEDICAL PRACTICE"),
            epraccur_row("ALD200", "", "A"),
            epraccur_row("Y00001", "00M", "P"),
        ]
    )
    rows = parse_dataset("gp-practices", text.encode())
    assert rows == [
        GpPracticeRow("A81001", "THE DENSHAM SURGERY", "00K", "A"),
        GpPracticeRow("A81003", "VICTORIA, MEDICAL PRACTICE", "00K", "C"),
        GpPracticeRow("ALD200", "THE SURGERY", None, "A"),
        GpPracticeRow("Y00001", "THE SURGERY", "00M", "P"),
    ]


def test_epraccur_latin1_falls_back() -> None:
    rows = parse_dataset("gp-practices", epraccur_row(name="CAFÉ SURGERY").encode("latin-1"))
    assert rows[0].name == "CAFÉ SURGERY"
    rows = parse_dataset("gp-practices", ("\ufeff" + epraccur_row(name="CAFÉ SURGERY")).encode())
    assert rows[0] == GpPracticeRow("A81001", "CAFÉ SURGERY", "00K", "A")


def test_epraccur_refuses_other_layouts_and_repeats() -> None:
    error = refused("gp-practices", "gp_practice_code,name\nA81001,X\n")
    assert error.extra["errors"][0]["line"] == 1
    assert "27" in error.extra["errors"][0]["message"]
    error = refused("gp-practices", epraccur_row() + "\n" + epraccur_row() + "\n")
    assert error.extra["errors"] == [
        {"line": 2, "column": "field 1", "message": "repeats practice A81001 of line 1"}
    ]
    error = refused("gp-practices", epraccur_row(code="") + "\n")
    assert error.extra["errors"][0]["column"] == "field 1"


@pytest.mark.skipif(not EPRACCUR.is_file(), reason="the shared epraccur extract is not on this machine")
def test_the_real_epraccur_extract() -> None:
    rows = parse_dataset("gp-practices", EPRACCUR.read_bytes())
    assert len(rows) == 14357
    by_code = {row.gp_practice_code: row for row in rows}
    assert by_code["A81001"] == GpPracticeRow("A81001", "THE DENSHAM SURGERY", "00K", "A")
    assert by_code["A81003"].status == "C"
    assert by_code["A81003"].commissioner_code == "00K"
    assert {row.status for row in rows} == {"A", "C", "D", "P"}
    assert sum(row.commissioner_code is None for row in rows) == 165
    # The same file in Latin-1 (as older extracts are published) parses the same.
    assert parse_dataset("gp-practices", EPRACCUR.read_text("utf-8").encode("latin-1")) == rows


# -- header datasets ----------------------------------------------------------------------------------


def test_patients() -> None:
    text = f"nhs_number,date_of_birth,postcode\n{VALID},1980-01-01,ts18 1hu\n 943 476-5919x,,\n"
    refused("patients", text)
    rows = parse_dataset(
        "patients",
        (
            "\ufeffNHS_Number , Postcode,date_of_birth,extra\r\n"
            f" 999-039-4083 ,ts181hu,,x\r\n{VALID},,1980-01-01,\r\n"
        ).encode(),
    )
    assert rows == [
        PatientRow(OTHER, None, "TS18", "ts181hu"),
        PatientRow(VALID, date(1980, 1, 1), None, None),
    ]


def test_patient_errors_never_repeat_identifiers() -> None:
    error = refused(
        "patients",
        f"nhs_number,date_of_birth,postcode\n{VALID[:9]}0,1980-01-01,TS18 1HU\n{VALID},1980-02-30,TS18 1HU\n"
        f"{VALID},1980-01-01,TS18 1HU\n{VALID},1980-01-01,TS1 1AA\n",
    )
    errors = error.extra["errors"]
    assert [(e["line"], e["column"]) for e in errors] == [(2, "nhs_number"), (3, "date_of_birth"), (5, None)]
    assert "line 4" in errors[2]["message"]
    text = str(error.extra) + error.detail
    for identifier in (VALID, VALID[:9] + "0", "1980", "TS18", "TS1"):
        assert identifier not in text


def test_registrations() -> None:
    rows = parse_dataset(
        "registrations",
        b"nhs_number,gp_practice_code,registered_from,registered_to\n"
        + (
            f"{VALID},a81001,2015-06-01,2019-07-11\n{VALID},M82616,2019-07-12,\n"
            f"{OTHER},A81003,2019-07-12,2019-07-12\n"
        ).encode(),
    )
    assert rows == [
        RegistrationRow(VALID, "A81001", date(2015, 6, 1), date(2019, 7, 11)),
        RegistrationRow(VALID, "M82616", date(2019, 7, 12), None),
        RegistrationRow(OTHER, "A81003", date(2019, 7, 12), date(2019, 7, 12)),
    ]
    error = refused(
        "registrations",
        "nhs_number,gp_practice_code,registered_from,registered_to\n"
        f"{VALID},A81001,2019-07-12,2019-07-11\n{VALID},A81001,,\n{VALID},A81 001,2019-01-01,\n"
        f"{OTHER},A81001,2019-01-01,\n{OTHER},a81001,2019-01-01,2020-01-01\n",
    )
    assert [(e["line"], e["column"]) for e in error.extra["errors"]] == [
        (2, "registered_to"),
        (3, "registered_from"),
        (4, "gp_practice_code"),
        (6, None),
    ]


def test_postcode_districts() -> None:
    rows = parse_dataset("postcode-districts", b"commissioner_code,postcode_district\n00k, ts18 \nX24,AL10\n")
    assert rows == [PostcodeDistrictRow("TS18", "00K"), PostcodeDistrictRow("AL10", "X24")]
    error = refused(
        "postcode-districts", "postcode_district,commissioner_code\nTS18 1HU,00K\nTS18,00K\nts18,00M\n,00K\n"
    )
    assert [(e["line"], e["column"]) for e in error.extra["errors"]] == [
        (2, "postcode_district"),
        (4, None),
        (5, "postcode_district"),
    ]
    assert "TS18" in error.extra["errors"][1]["message"]


def test_tariff() -> None:
    text = (
        "hrg_code,hrg_name,point_of_delivery,price,trim_point_days,excess_bed_day_price\n"
        "FF12A,Inflammatory Bowel Disease,EL,1586.73,11,301.00\n"
        'hn22c,"Major Knee Procedures, with CC Score 0-1",dc,1971.92,,\n'
        "WF01A,Outpatient,OPFU,100,0,0\n"
    )
    assert parse_dataset("tariff", text.encode()) == [
        TariffRow("FF12A", "Inflammatory Bowel Disease", "EL", Decimal("1586.73"), 11, Decimal("301.00")),
        TariffRow(
            "HN22C", "Major Knee Procedures, with CC Score 0-1", "DC", Decimal("1971.92"), 0, Decimal("0")
        ),
        TariffRow("WF01A", "Outpatient", "OPFU", Decimal("100"), 0, Decimal("0")),
    ]


def test_tariff_errors() -> None:
    error = refused(
        "tariff",
        "hrg_code,hrg_name,point_of_delivery,price,trim_point_days,excess_bed_day_price\n"
        "FF12A,x,EL,1586.73,11,301.00\n"
        "FF12A,x,el,1.00,1,1\n"  # the same HRG × point of delivery
        "FF12A,x,XX,1.00,1,1\n"
        "FF12B,x,EL,£1.00,1,1\n"
        "FF12C,x,EL,1.00,-1,1\n"
        "FF12D,x,EL,1.00,3,\n"
        "FF12E,x,EL,1e3,,\n",
    )
    assert [(e["line"], e["column"]) for e in error.extra["errors"]] == [
        (3, None),
        (4, "point_of_delivery"),
        (5, "price"),
        (6, "trim_point_days"),
        (7, "excess_bed_day_price"),
        (8, "price"),
    ]
    assert "FF12A/EL" in error.extra["errors"][0]["message"]


def test_providers_and_specialised_services() -> None:
    assert parse_dataset("providers", b"provider_code,name,market_forces_factor\nrtr,South Tees,1.139\n") == [
        ProviderRow("RTR", "South Tees", Decimal("1.139"))
    ]
    error = refused("providers", "provider_code,name,market_forces_factor\nRTR,a,0\nRVW,b,\nRXP,c,-1\n")
    assert [e["line"] for e in error.extra["errors"]] == [2, 3, 4]
    assert parse_dataset(
        "specialised-services", b"service_code,name,commissioner_code\nncbps13b,Cardiac,x24\n"
    ) == [SpecialisedServiceRow("NCBPS13B", "Cardiac", "X24")]
    refused("specialised-services", "service_code,name,commissioner_code\nNCBPS13B,a,X24\nncbps13b,b,X24\n")


# -- file-level refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_an_empty_file_is_refused(dataset: str) -> None:
    assert "empty" in refused(dataset, b"  \n").detail


def test_a_header_alone_is_an_empty_dataset() -> None:
    assert parse_dataset("specialised-services", b"service_code,name,commissioner_code\n") == []


def test_missing_required_columns_are_named() -> None:
    error = refused("tariff", "hrg_code,point_of_delivery,price\nFF12A,EL,1\n")
    assert error.extra["errors"][0]["column"] == "hrg_name"
    for column in ("hrg_name", "trim_point_days", "excess_bed_day_price"):
        assert column in error.detail


def test_a_column_named_twice_is_refused() -> None:
    error = refused("providers", "provider_code,name,market_forces_factor,Name\nRTR,a,1,b\n")
    assert error.extra["errors"][0]["column"] == "name"


def test_rows_of_another_width_are_refused() -> None:
    error = refused("providers", "provider_code,name,market_forces_factor\nRTR,South Tees, Trust,1.1\n")
    assert error.extra["errors"][0] == {
        "line": 2,
        "column": None,
        "message": "has 4 fields where the header row has 3",
    }


def test_not_utf8_is_refused_naming_the_line() -> None:
    error = refused(
        "providers",
        b"provider_code,name,market_forces_factor\nRTR,a,1\n" + "RVW,Café,1\n".encode("latin-1"),
    )
    assert error.extra["errors"][0]["line"] == 3


def test_nul_and_bad_quoting_are_refused() -> None:
    assert (
        refused("providers", b"provider_code,name,market_forces_factor\nRTR,a\x00,1\n").extra["errors"][0][
            "line"
        ]
        == 2
    )
    assert "CSV" in refused("providers", 'provider_code,name,market_forces_factor\nRTR,"a,1\n').detail


def test_at_most_twenty_errors_are_listed_and_all_are_counted() -> None:
    body = "provider_code,name,market_forces_factor\n" + "".join(f"R{i:02d},x,bad\n" for i in range(30))
    error = refused("providers", body)
    assert len(error.extra["errors"]) == MAX_REPORTED_ERRORS
    assert error.extra["errors"][0] == {
        "line": 2,
        "column": "market_forces_factor",
        "message": "must be a number such as 1234.50 (digits, an optional decimal point)",
    }
    assert error.extra["errors"][-1]["line"] == 21
    assert error.extra["error_count"] == 30
    assert "29 more" in error.detail


def test_multiline_quoted_values_report_the_starting_line() -> None:
    body = 'provider_code,name,market_forces_factor\nRTR,"two\nlines",1\nRVW,x,bad\n'
    error = refused("providers", body)
    assert error.extra["errors"][0]["line"] == 4


@pytest.mark.skipif(not SAMPLE_V2.is_dir(), reason="the shared sample worlds are not on this machine")
@pytest.mark.parametrize("dataset", [d for d in DATASETS if d != "gp-practices"])
def test_the_sample_reference_files_parse(dataset: str) -> None:
    # The v1 sample has no v2 datasets; the v2 sample has every one.
    path = SAMPLE / FILENAMES[dataset]
    data = (path if path.is_file() else SAMPLE_V2 / FILENAMES[dataset]).read_bytes()
    rows = parse_dataset(dataset, data)
    assert len(rows) == data.count(b"\n") - 1
    # BOM, CRLF and reordered columns change nothing.
    lines = data.decode().splitlines()
    assert parse_dataset(dataset, ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()) == rows
