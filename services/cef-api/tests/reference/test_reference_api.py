"""PUT /v1/reference/{dataset}: checked whole, tokenised, replaced atomically as a new version."""

from __future__ import annotations

import json

import generate_world
import sqlalchemy as sa
from api_support import Api

CSV = {"Content-Type": "text/csv"}


def _count(api: Api, table: str) -> int:
    with api.app.state.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _outbox(api: Api) -> list[dict]:
    with api.app.state.engine.connect() as conn:
        return [
            json.loads(p) for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        ]


async def test_each_dataset_loads_as_a_version(api: Api, world: generate_world.World) -> None:
    files = world.reference_files()
    for dataset, body in files.items():
        r = await api.client.put(
            f"/v1/reference/{dataset}", content=body, headers={**api.h("reference:write"), **CSV}
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["dataset"] == dataset
        assert out["version"] == 1
        assert out["rows"] == body.count(b"\n") - (0 if dataset == "gp-practices" else 1)
    listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
    assert sorted(i["dataset"] for i in listing["items"]) == sorted(files)
    events = [e for e in _outbox(api) if e["type"] == "reference.load"]
    assert len(events) == len(files)
    assert all(e["outcome"] == "success" for e in events)


async def test_patients_are_stored_as_tokens_and_districts(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    with api.app.state.engine.connect() as conn:
        rows = list(conn.execute(sa.text("SELECT nhs_token, dob_token, outward_code FROM ref_patient")))
        regs = list(conn.execute(sa.text("SELECT nhs_token FROM ref_registration")))
    traced = [p for p in world.patients if p.in_trace]
    assert len(rows) == len(traced)
    stored = " ".join(str(v) for r in rows + regs for v in r)
    for p in world.patients:
        assert p.nhs_number not in stored
        assert p.date_of_birth.isoformat() not in stored
    assert {r.outward_code for r in rows if r.outward_code} <= set(world.districts)
    # Registrations and patients are joined on tokens made under one key version.
    assert {r.nhs_token for r in regs} & {r.nhs_token for r in rows}


async def test_a_bad_file_is_refused_whole_and_nothing_changes(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    before = _count(api, "ref_tariff")
    bad = b"hrg_code,hrg_name,point_of_delivery,price,trim_point_days,excess_bed_day_price\n"
    bad += b"AA11A,Fine,EL,100.00,2,10.00\nAA11B,Bad price,EL,12x,2,10.00\nAA11C,Bad pod,XX,1.00,,\n"
    r = await api.client.put("/v1/reference/tariff", content=bad, headers={**api.h("reference:write"), **CSV})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "reference-file-invalid"
    assert [e["line"] for e in problem["errors"]] == [3, 4]
    assert problem["errors"][0]["column"] == "price"
    assert _count(api, "ref_tariff") == before
    listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
    assert {i["dataset"]: i["version"] for i in listing["items"]}["tariff"] == 1
    assert [e["outcome"] for e in _outbox(api) if e["type"] == "reference.load"][-1] == "failure"


async def test_a_new_load_replaces_the_dataset(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    body = b"provider_code,name,market_forces_factor\nRTR,South Tees,1.100\n"
    r = await api.client.put(
        "/v1/reference/providers", content=body, headers={**api.h("reference:write"), **CSV}
    )
    assert r.json() == {
        "dataset": "providers",
        "rows": 1,
        "version": 2,
        "key_version": None,
        "added": 1,
        "kept": 0,
        "retired": len(world.providers),
    }
    with api.app.state.engine.connect() as conn:
        rows = list(conn.execute(sa.text("SELECT version, provider_code FROM ref_provider")))
    assert rows == [(2, "RTR")]


async def test_reference_endpoints_need_the_reference_write_scope(api: Api) -> None:
    body = b"provider_code,name,market_forces_factor\nRTR,South Tees,1.100\n"
    r = await api.client.put("/v1/reference/providers", content=body, headers=CSV)
    assert r.status_code == 401
    r = await api.client.put(
        "/v1/reference/providers", content=body, headers={**api.h("invoices:submit", org="RTR"), **CSV}
    )
    assert r.status_code == 403
    assert (await api.client.get("/v1/reference")).status_code == 401
    assert (
        await api.client.get("/v1/reference", headers=api.h("invoices:read", org="00K"))
    ).status_code == 403


async def test_unknown_dataset_and_content_type(api: Api) -> None:
    r = await api.client.put(
        "/v1/reference/nonsense", content=b"a\n1\n", headers={**api.h("reference:write"), **CSV}
    )
    assert r.status_code == 404
    assert "gp-practices" in r.json()["detail"]
    r = await api.client.put(
        "/v1/reference/providers",
        content=b"{}",
        headers={**api.h("reference:write"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


async def test_versions_an_open_invoice_reads_are_kept_until_it_is_done(
    api: Api, world: generate_world.World
) -> None:
    from datetime import UTC, datetime

    from sqlmodel import Session

    from cef_api.reference.service import prune_superseded

    await api.load_world(world)
    engine = api.app.state.engine
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO invoice (id, invoice_number, provider_code, commissioner_code, invoice_date,"
                " period_start, period_end, status, submitted_at, submitted_by, request_hash, backing_bytes,"
                " background, lines_done, lines, valid, query, rejected, claimed_pennies, validated_pennies,"
                " reference_versions) VALUES ('i-1', 'N-1', 'RTR', '00K', '2019-05-05', '2019-04-01',"
                " '2019-04-30', 'validating', :now, 'x', 'h', 10, true, 0, 0, 0, 0, 0, 0, 0, :versions)"
            ),
            {"now": datetime.now(UTC), "versions": json.dumps({"providers": 1})},
        )
    body = b"provider_code,name,market_forces_factor\nRTR,South Tees,1.100\n"
    r = await api.client.put(
        "/v1/reference/providers", content=body, headers={**api.h("reference:write"), **CSV}
    )
    assert r.json()["version"] == 2
    with engine.connect() as conn:
        kept = sorted({v for (v,) in conn.execute(sa.text("SELECT version FROM ref_provider"))})
    assert kept == [1, 2]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE invoice SET status = 'validated'"))
    with Session(engine) as session:
        prune_superseded(session)
        session.commit()
    with engine.connect() as conn:
        kept = sorted({v for (v,) in conn.execute(sa.text("SELECT version FROM ref_provider"))})
    assert kept == [2]
