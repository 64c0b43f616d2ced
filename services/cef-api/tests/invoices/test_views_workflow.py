"""Who sees what (providers, CEF staff, finance), the query decisions, approval and the
approved-to-pay list."""

from __future__ import annotations

import json

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api


@pytest.fixture
async def submitted(api: Api, world: generate_world.World) -> tuple[Api, dict, generate_world.Invoice]:
    await api.load_world(world)
    inv = world.invoices[0]
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201
    return api, r.json(), inv


def _events(api: Api, kind: str) -> list[dict]:
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [e for e in (json.loads(p) for (p,) in rows) if e["type"] == kind]


async def test_every_invoice_endpoint_authorises(submitted: tuple[Api, dict, generate_world.Invoice]) -> None:
    api, invoice, inv = submitted
    provider, commissioner = inv.header["provider_code"], inv.header["commissioner_code"]
    other_provider = "RVW" if provider != "RVW" else "RTR"
    base = f"/v1/invoices/{invoice['id']}"
    endpoints = [
        ("GET", base),
        ("GET", f"{base}/lines"),
        ("GET", "/v1/invoices"),
        ("GET", "/v1/invoices/approved-to-pay"),
        ("POST", f"{base}/approve"),
        ("POST", f"{base}/lines/00001/decision"),
    ]
    for method, url in endpoints:
        r = await api.client.request(method, url, json={"decision": "reject", "reason": "x"})
        assert r.status_code == 401, url
        r = await api.client.request(
            method, url, json={"decision": "reject", "reason": "x"}, headers=api.h("reference:write")
        )
        assert r.status_code == 403, url
    # Another organisation's invoice is answered as if it did not exist (see test_refusals.py).
    assert (
        await api.client.get(base, headers=api.h("invoices:submit", org=other_provider))
    ).status_code == 404
    assert (
        await api.client.get(f"{base}/lines", headers=api.h("invoices:submit", org=other_provider))
    ).status_code == 404
    other_commissioner = "X24"
    for scope in ("invoices:validate", "invoices:read"):
        assert (await api.client.get(base, headers=api.h(scope, org=other_commissioner))).status_code == 404
    r = await api.client.get(f"{base}/lines", headers=api.h("invoices:validate", org=other_commissioner))
    assert r.status_code == 404
    r = await api.client.post(f"{base}/approve", headers=api.h("invoices:validate", org=other_commissioner))
    assert r.status_code == 404
    # Finance sees the header but never line-level data; providers cannot decide.
    assert (await api.client.get(base, headers=api.h("invoices:read", org=commissioner))).status_code == 200
    r = await api.client.get(f"{base}/lines", headers=api.h("invoices:read", org=commissioner))
    assert r.status_code == 403
    assert r.json()["code"] == "lines-not-for-finance"
    r = await api.client.post(f"{base}/approve", headers=api.h("invoices:submit", org=provider))
    assert r.status_code == 403
    assert (
        await api.client.get("/v1/invoices/nope", headers=api.h("invoices:read", org=commissioner))
    ).status_code == 404


async def test_provider_view_has_exactly_the_contract_fields(
    submitted: tuple[Api, dict, generate_world.Invoice],
) -> None:
    api, invoice, inv = submitted
    lines = await api.lines(invoice["id"], "invoices:submit", inv.header["provider_code"])
    assert len(lines) == len(inv.expected)
    assert all(
        set(x) == {"line_ref", "outcome", "reasons", "responsible_commissioner", "expected_amount"}
        for x in lines
    )
    r = await api.client.get(
        f"/v1/invoices/{invoice['id']}/lines",
        params={"outcome": "query", "limit": 2},
        headers=api.h("invoices:submit", org=inv.header["provider_code"]),
    )
    page = r.json()
    assert len(page["items"]) <= 2
    assert all(x["outcome"] == "query" for x in page["items"])
    assert _events(api, "invoice.lines.read") == []


async def test_staff_view_has_tokens_and_is_audited(
    submitted: tuple[Api, dict, generate_world.Invoice],
) -> None:
    api, invoice, inv = submitted
    lines = await api.lines(invoice["id"], "invoices:validate", inv.header["commissioner_code"])
    assert any(x["patient_token"] for x in lines)
    assert {"line_no", "activity_date", "hrg_code", "claimed_amount", "decision"} <= set(lines[0])
    events = _events(api, "invoice.lines.read")
    assert events
    assert events[0]["entity"]["id"] == invoice["id"]
    assert sum(e["entity"]["count"] for e in events) == len(lines)
    text = json.dumps(lines)
    for p in api_world_patients(inv):
        assert p not in text


def api_world_patients(inv: generate_world.Invoice) -> list[str]:
    import csv
    import io

    rows = csv.DictReader(io.StringIO(inv.backing.decode("utf-8-sig")))
    return [
        r["nhs_number"].strip().replace(" ", "").replace("-", "") for r in rows if r["nhs_number"].strip()
    ]


async def test_lists_are_scoped_to_the_caller(submitted: tuple[Api, dict, generate_world.Invoice]) -> None:
    api, invoice, inv = submitted
    provider, commissioner = inv.header["provider_code"], inv.header["commissioner_code"]
    mine = (await api.client.get("/v1/invoices", headers=api.h("invoices:submit", org=provider))).json()
    assert [i["id"] for i in mine["items"]] == [invoice["id"]]
    other = "RVW" if provider != "RVW" else "RTR"
    theirs = (await api.client.get("/v1/invoices", headers=api.h("invoices:submit", org=other))).json()
    assert theirs["items"] == []
    r = await api.client.get(
        "/v1/invoices", params={"provider_code": provider}, headers=api.h("invoices:submit", org=other)
    )
    assert r.status_code == 403
    fin = (
        await api.client.get(
            "/v1/invoices", params={"status": "validated"}, headers=api.h("invoices:read", org=commissioner)
        )
    ).json()
    assert [i["id"] for i in fin["items"]] == [invoice["id"]]
    r = await api.client.get(
        "/v1/invoices", params={"commissioner_code": "X24"}, headers=api.h("invoices:read", org=commissioner)
    )
    assert r.status_code == 403


async def test_decisions_and_approval(submitted: tuple[Api, dict, generate_world.Invoice]) -> None:
    api, invoice, inv = submitted
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"], sub="cef-officer")
    base = f"/v1/invoices/{invoice['id']}"
    queries = [e for e in inv.expected if e.outcome == "query"]
    valid = [e for e in inv.expected if e.outcome == "valid"]
    assert queries
    assert valid
    r = await api.client.post(f"{base}/approve", headers=staff)
    assert r.status_code == 409
    assert r.json()["pending"] == len(queries)
    r = await api.client.post(
        f"{base}/lines/{valid[0].line_ref}/decision",
        json={"decision": "accept", "amount": "1"},
        headers=staff,
    )
    assert r.status_code == 409
    r = await api.client.post(
        f"{base}/lines/{queries[0].line_ref}/decision", json={"decision": "accept"}, headers=staff
    )
    assert r.status_code == 422
    accepted = "0"
    for n, q in enumerate(queries):
        body = (
            {"decision": "accept", "amount": "100.50"}
            if n % 2 == 0
            else {"decision": "reject", "reason": "no referral"}
        )
        r = await api.client.post(f"{base}/lines/{q.line_ref}/decision", json=body, headers=staff)
        assert r.status_code == 200, r.text
        assert r.json()["decision"] == body["decision"]
        assert r.json()["decided_by"] == "cef-officer"
        if n % 2 == 0:
            accepted = str(float(accepted) + 100.50)
    r = await api.client.post(f"{base}/approve", headers=staff)
    assert r.status_code == 200, r.text
    approved = r.json()
    has_unpaid = any(e.outcome == "rejected" for e in inv.expected) or len(queries) > 1
    assert approved["status"] == ("part-approved" if has_unpaid else "approved")
    want = sum(e.claimed_amount for e in valid) + sum(
        __import__("decimal").Decimal("100.50") for n, _ in enumerate(queries) if n % 2 == 0
    )
    assert approved["approved_amount"] == f"{want:.2f}"
    r = await api.client.post(
        f"{base}/lines/{queries[0].line_ref}/decision",
        json={"decision": "reject", "reason": "x"},
        headers=staff,
    )
    assert r.status_code == 409
    finance = api.h("invoices:read", org=inv.header["commissioner_code"])
    pay = (await api.client.get("/v1/invoices/approved-to-pay", headers=finance)).json()
    assert [(i["id"], i["approved_amount"]) for i in pay["items"]] == [(invoice["id"], f"{want:.2f}")]
    assert pay["total_approved_amount"] == f"{want:.2f}"
    assert "lines" not in json.dumps(pay["items"][0])
    assert len(_events(api, "invoice.line.decision")) == len(queries)
    assert _events(api, "invoice.approve")[0]["detail"]["approved_amount"] == f"{want:.2f}"
