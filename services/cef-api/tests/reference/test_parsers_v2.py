"""The v2 reference files: originating commissioners, devolved districts, contracts, prior approvals."""

from __future__ import annotations

from datetime import date

import pytest

from cef_api.reference.parsers import (
    ContractRow,
    DevolvedDistrictRow,
    OriginatingCommissionerRow,
    PriorApprovalRow,
    ReferenceFileError,
    parse_dataset,
)

VALID = "9434765919"
OTHER = "9990394083"
ORIGINATING = "nhs_number,care_basis,commissioner_code,from,to\n"
DEVOLVED = "postcode_district,nation\n"
CONTRACTS = "commissioner_code,provider_code,from,to\n"
APPROVALS = "commissioner_code,reference,nhs_number,valid_from,valid_to\n"


def errors_of(dataset: str, text: str) -> list[tuple[int, str | None]]:
    with pytest.raises(ReferenceFileError) as info:
        parse_dataset(dataset, text.encode())
    assert info.value.code == "reference-file-invalid"
    return [(e["line"], e["column"]) for e in info.value.extra["errors"]]


def test_originating_commissioners() -> None:
    rows = parse_dataset(
        "originating-commissioners",
        (
            "\ufeffTo, From ,commissioner_code,care_basis,NHS_Number\r\n"
            f",2018-06-22,00k,s117,{VALID}\r\n2019-07-19,2015-03-02,01H,S117,999 039 4083\r\n"
            f",2019-07-20,00M,S117,{OTHER}\r\n2019-12-31,2019-01-01,00M,chc,{OTHER}\r\n"
        ).encode(),
    )
    assert rows == [
        OriginatingCommissionerRow(VALID, "S117", "00K", date(2018, 6, 22), None),
        OriginatingCommissionerRow(OTHER, "S117", "01H", date(2015, 3, 2), date(2019, 7, 19)),
        OriginatingCommissionerRow(OTHER, "S117", "00M", date(2019, 7, 20), None),
        OriginatingCommissionerRow(OTHER, "CHC", "00M", date(2019, 1, 1), date(2019, 12, 31)),
    ]


def test_originating_commissioner_errors_name_line_and_column_never_the_patient() -> None:
    text = (
        ORIGINATING + f"{VALID},S117,00K,2019-01-01,2018-12-31\n"  # to before from
        f"{VALID},S11,00K,2019-01-01,\n"  # not a care basis
        f"{VALID[:9]}0,CHC,00K,2019-01-01,\n"  # check digit
        f"{VALID},CHC,00K,,\n"  # from missing
        f"{VALID},CHC,00K,2019-02-30,\n"  # no such date
        f"{VALID},S117,00K,2018-06-22,\n{VALID},s117,00k,2018-06-22,2019-01-01\n"  # repeat
    )
    with pytest.raises(ReferenceFileError) as info:
        parse_dataset("originating-commissioners", text.encode())
    assert [(e["line"], e["column"]) for e in info.value.extra["errors"]] == [
        (2, "to"),
        (3, "care_basis"),
        (4, "nhs_number"),
        (5, "from"),
        (6, "from"),
        (8, None),
    ]
    said = str(info.value.extra) + info.value.detail
    assert VALID not in said
    assert "2018-06-22" not in said


def test_devolved_districts() -> None:
    rows = parse_dataset("devolved-districts", b"nation,postcode_district\nw, cf10 \nS,EH1\nN,BT48\n")
    assert rows == [
        DevolvedDistrictRow("CF10", "W"),
        DevolvedDistrictRow("EH1", "S"),
        DevolvedDistrictRow("BT48", "N"),
    ]
    assert errors_of("devolved-districts", DEVOLVED + "CF10,E\nCF10 1AA,W\nEH1,S\neh1,N\n,W\n") == [
        (2, "nation"),
        (3, "postcode_district"),
        (5, None),
        (6, "postcode_district"),
    ]


def test_contracts() -> None:
    rows = parse_dataset(
        "contracts",
        (CONTRACTS + "00K,rxp,2016-04-01,2019-06-22\n00k,RXP,2019-06-23,\n").encode(),
    )
    assert rows == [
        ContractRow("00K", "RXP", date(2016, 4, 1), date(2019, 6, 22)),
        ContractRow("00K", "RXP", date(2019, 6, 23), None),
    ]
    assert errors_of(
        "contracts",
        CONTRACTS + "00K,RTR,2019-04-01,2019-03-31\n00K,R T R,2019-04-01,\n00K,RTR,,\n"
        "00K,RVW,2019-04-01,\n00K,rvw,2019-04-01,2020-01-01\n",
    ) == [(2, "to"), (3, "provider_code"), (4, "from"), (6, None)]


def test_a_contracts_file_of_a_header_alone_is_a_dataset_with_no_rows() -> None:
    assert parse_dataset("contracts", CONTRACTS.encode()) == []


def test_prior_approvals() -> None:
    rows = parse_dataset(
        "prior-approvals",
        (
            APPROVALS + f"00k, PA-00K-2019-0042 ,{VALID},2019-04-01,2019-04-01\n"
            f"X24,NHSE/IFR/19/00042,{OTHER},2019-03-01,2019-09-30\n"
        ).encode(),
    )
    assert rows == [
        PriorApprovalRow("00K", "PA-00K-2019-0042", VALID, date(2019, 4, 1), date(2019, 4, 1)),
        PriorApprovalRow("X24", "NHSE/IFR/19/00042", OTHER, date(2019, 3, 1), date(2019, 9, 30)),
    ]


def test_prior_approval_errors() -> None:
    assert (
        errors_of(
            "prior-approvals",
            APPROVALS + f"00K,PA-1,{VALID},2019-04-01,\n"  # valid_to is required
            f"00K,,{VALID},2019-04-01,2019-05-01\n"  # reference missing
            f"00K,{'R' * 41},{VALID},2019-04-01,2019-05-01\n"  # wider than the column
            f"00K,REF {VALID},{VALID},2019-04-01,2019-05-01\n"  # a reference holding an NHS number
            f"00K,PA-2,{VALID},2019-05-02,2019-05-01\n"  # ends before it starts
            f"00K,pa-3,{VALID},2019-04-01,2019-05-01\n00K,PA-3,{VALID},2019-04-01,2019-06-01\n",  # repeat
        )
        == [
            (2, "valid_to"),
            (3, "reference"),
            (4, "reference"),
            (5, "reference"),
            (6, "valid_to"),
            (8, None),
        ]
    )


@pytest.mark.parametrize(
    ("dataset", "header"),
    [
        ("originating-commissioners", "nhs_number,care_basis,commissioner_code,from"),
        ("devolved-districts", "postcode_district"),
        ("contracts", "commissioner_code,provider_code,to"),
        ("prior-approvals", "commissioner_code,reference,nhs_number,valid_from"),
    ],
)
def test_a_missing_column_is_named(dataset: str, header: str) -> None:
    with pytest.raises(ReferenceFileError) as info:
        parse_dataset(dataset, f"{header}\n".encode())
    missing = info.value.extra["errors"][0]["column"]
    assert missing not in header.split(",")
    assert missing in info.value.detail
