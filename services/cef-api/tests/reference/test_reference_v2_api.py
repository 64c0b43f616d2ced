"""The v2 reference datasets through the API on both databases: loaded as versions, NHS numbers kept
as tokens only, read back whole for validation, and deciding checks 12, 13 and 16 of a submitted
invoice."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from api_support import Api
from sqlmodel import Session

from cef_api.reference import repository
from cef_api.reference.service import ReferenceSnapshot

CSV = {"Content-Type": "text/csv"}
PATIENT = "9434765919"  # 00K's by registration, lives in Wales
PLACED = "9990394083"  # placed under s117 by 00M, registered with 00K's practice
LOCAL = "9990000018"  # 00K's, lives in TS18


def _practice(code: str, commissioner: str) -> str:
    fields = [code, f"PRACTICE {code}"] + [""] * 10 + ["A", "", commissioner] + [""] * 12
    return ",".join(f'"{f}"' for f in fields)


FILES: dict[str, str] = {
    "gp-practices": _practice("A81001", "00K") + "\n" + _practice("B82001", "00M") + "\n",
    "providers": "provider_code,name,market_forces_factor\nRTR,South Tees,1.000\n",
    "tariff": "hrg_code,hrg_name,point_of_delivery,price,trim_point_days,excess_bed_day_price\n"
    "HN12A,Knee,DC,100.00,,\nHN12A,Knee,NEL,200.00,3,10.00\n",
    "postcode-districts": "postcode_district,commissioner_code\nTS18,00K\n",
    "patients": f"nhs_number,date_of_birth,postcode\n{PATIENT},,CF10 1AA\n{PLACED},,TS18 1HU\n"
    f"{LOCAL},,TS18 1HU\n",
    "registrations": "nhs_number,gp_practice_code,registered_from,registered_to\n"
    f"{PATIENT},A81001,2019-01-01,\n{PLACED},A81001,2019-01-01,\n{LOCAL},A81001,2019-01-01,\n",
    "devolved-districts": "postcode_district,nation\nCF10,W\nEH1,S\n",
    "originating-commissioners": "nhs_number,care_basis,commissioner_code,from,to\n"
    f"{PLACED},S117,01H,2015-03-02,2019-07-19\n{PLACED},S117,00M,2019-07-20,\n",
    # A contracts dataset with no rows: all activity is non-contract.
    "contracts": "commissioner_code,provider_code,from,to\n",
    "prior-approvals": "commissioner_code,reference,nhs_number,valid_from,valid_to\n"
    f"00K,PA-00K-2019-0042,{LOCAL},2019-07-01,2019-07-31\n",
}
V2 = ("devolved-districts", "originating-commissioners", "contracts", "prior-approvals")


async def _load(api: Api, files: dict[str, str]) -> None:
    for dataset, body in files.items():
        r = await api.client.put(
            f"/v1/reference/{dataset}", content=body.encode(), headers={**api.h("reference:write"), **CSV}
        )
        assert r.status_code == 200, r.text
        assert r.json()["rows"] == body.count("\n") - (0 if dataset == "gp-practices" else 1)


async def test_the_v2_datasets_load_as_versions_with_tokens_only(api: Api) -> None:
    await _load(api, FILES)
    listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
    by_dataset = {i["dataset"]: i for i in listing["items"]}
    assert {d: by_dataset[d]["rows"] for d in V2} == {
        "devolved-districts": 2,
        "originating-commissioners": 2,
        "contracts": 0,
        "prior-approvals": 1,
    }
    # Every dataset of NHS-number tokens is made under one key: they are joined on them.
    keyed = {
        by_dataset[d]["key_version"] for d in ("patients", "originating-commissioners", "prior-approvals")
    }
    assert len(keyed) == 1
    assert None not in keyed
    with api.app.state.engine.connect() as conn:
        stored = [
            *conn.execute(sa.text("SELECT * FROM ref_originating_commissioner")),
            *conn.execute(sa.text("SELECT * FROM ref_prior_approval")),
        ]
        patient_tokens = {t for (t,) in conn.execute(sa.text("SELECT nhs_token FROM ref_patient"))}
        originating_tokens = {
            t for (t,) in conn.execute(sa.text("SELECT nhs_token FROM ref_originating_commissioner"))
        }
    text = " ".join(str(v) for row in stored for v in row)
    for number in (PATIENT, PLACED, LOCAL):
        assert number not in text
    assert originating_tokens <= patient_tokens

    with Session(api.app.state.engine) as session:
        snapshot = ReferenceSnapshot.load(session, repository.current_versions(session))
        reference = snapshot.for_patients(session, [])
    token = api.app.state.tokeniser.tokenise("nhs_number", [PLACED], key_version=snapshot.key_version).tokens[
        0
    ]
    assert [r.commissioner_code for r in reference.originating_commissioners(token, "S117")] == ["01H", "00M"]
    assert reference.originating_commissioners(token, "CHC") == []
    assert reference.devolved_nation("CF10") == "W"
    assert reference.devolved_nation("TS18") is None
    assert reference.contracts_loaded()
    assert not reference.contract_covers("00K", "RTR", date(2019, 7, 10))


async def test_a_bad_v2_file_is_refused_whole_by_line(api: Api) -> None:
    body = "commissioner_code,provider_code,from,to\n00K,RTR,2019-04-01,\n00K,RTR,2019-04-01,2019-03-01\n"
    r = await api.client.put(
        "/v1/reference/contracts", content=body.encode(), headers={**api.h("reference:write"), **CSV}
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "reference-file-invalid"
    assert [(e["line"], e["column"]) for e in problem["errors"]] == [(3, "to")]
    listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
    assert "contracts" not in {i["dataset"] for i in listing["items"]}


async def test_a_submitted_invoice_is_decided_with_the_v2_datasets(api: Api) -> None:
    await _load(api, FILES)
    header = {
        "invoice_number": "RTR-201907-0001",
        "provider_code": "RTR",
        "commissioner_code": "00K",
        "invoice_date": "2019-07-31",
        "period_start": "2019-07-01",
        "period_end": "2019-07-31",
    }
    backing = (
        "line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount,care_basis,prior_approval_ref\n"
        f"L1,{PATIENT},NEL,HN12A,2019-07-10,200.00,,\n"  # registered with 00K, lives in Wales
        f"L2,{PLACED},DC,HN12A,2019-07-19,100.00,S117,\n"  # 01H's aftercare that day
        f"L3,{PLACED},DC,HN12A,2019-07-20,100.00,s117,\n"  # 00M's from that day
        f"L4,{PLACED},DC,HN12A,2019-07-20,100.00,CHC,\n"  # no CHC row
        f"L5,{LOCAL},DC,HN12A,2019-07-10,100.00,,pa-00k-2019-0042\n"  # approved
        f"L6,{LOCAL},DC,HN12A,2019-07-11,100.00,,\n"  # non-contract, no approval
    )
    r = await api.submit(header, backing.encode())
    assert r.status_code == 201, r.text
    lines = {
        line["line_ref"]: (line["reasons"], line["responsible_commissioner"])
        for line in await api.lines(r.json()["id"], "invoices:submit", "RTR")
    }
    assert lines == {
        "L1": (["CROSS_BORDER_RESIDENT"], "00K"),
        "L2": (["NOT_RESPONSIBLE_COMMISSIONER"], "01H"),
        "L3": (["NOT_RESPONSIBLE_COMMISSIONER"], "00M"),
        "L4": (["ORIGINATING_COMMISSIONER_UNKNOWN"], None),
        "L5": ([], "00K"),
        "L6": (["PRIOR_APPROVAL_MISSING"], "00K"),
    }
