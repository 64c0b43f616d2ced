"""Every refusal of the CEF API is one denied audit event naming the route template and no raw free
value; another organisation's invoice is answered exactly as a missing one; a flood of refusals
from one caller is recorded up to the limit and counted beyond it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, api_settings, running_api
from jose import jwt

from cef_common.testing import DevIssuer, database_values

NHS_SHAPED = "9990394083"  # passes the code pattern; must never be stored


def _outbox(api: Api) -> list[dict[str, Any]]:
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [json.loads(p) for (p,) in rows]


def _without_claim(issuer: DevIssuer, claim: str, sub: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "cef-dev", "sub": sub, "aud": "cef-api", "iat": now, "exp": now + 300}
    claims.pop(claim)
    key = issuer.signer.key
    token = jwt.encode(claims, key.private_pem, algorithm="ES256", headers={"kid": key.kid})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def submitted(sqlite_api: Api, world: generate_world.World) -> tuple[Api, dict, generate_world.Invoice]:
    await sqlite_api.load_world(world)
    inv = world.invoices[0]
    r = await sqlite_api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    return sqlite_api, r.json(), inv


async def test_each_refusal_is_exactly_one_denied_event_with_the_route_template(
    submitted: tuple[Api, dict, generate_world.Invoice], dev_issuer: DevIssuer
) -> None:
    api, invoice, inv = submitted
    provider, commissioner = inv.header["provider_code"], inv.header["commissioner_code"]
    other_provider = "RVW" if provider != "RVW" else "RTR"
    base = f"/v1/invoices/{invoice['id']}"
    one = "/v1/invoices/{invoice_id}"
    valid_line = next(e for e in inv.expected if e.outcome == "valid").line_ref
    h = dev_issuer.headers
    cases: list[tuple[str, str, str, str, dict[str, str], int, str, str]] = [
        ("no token", "GET", f"/v1/invoices/{NHS_SHAPED}", one, {}, 401, "no-token", "anonymous"),
        (
            "bad token",
            "GET",
            base,
            one,
            {"Authorization": f"Bearer {NHS_SHAPED}"},
            401,
            "malformed-token",
            "anonymous",
        ),
        (
            "wrong audience",
            "GET",
            base,
            one,
            h("invoices:read", aud="tokeniser", sub="p1"),
            401,
            "wrong-audience",
            "p1",
        ),
        ("no exp", "GET", base, one, _without_claim(dev_issuer, "exp", "p2"), 401, "missing-claim-exp", "p2"),
        ("no iat", "GET", base, one, _without_claim(dev_issuer, "iat", "p3"), 401, "missing-claim-iat", "p3"),
        (
            "no sub",
            "GET",
            base,
            one,
            _without_claim(dev_issuer, "sub", "x"),
            401,
            "missing-claim-sub",
            "anonymous",
        ),
        ("wrong scope", "GET", base, one, h("reference:write", sub="p4"), 403, "insufficient-scope", "p4"),
        (
            "other provider",
            "GET",
            base,
            one,
            h("invoices:submit", org=other_provider, sub="p5"),
            404,
            "not-visible",
            "p5",
        ),
        (
            "other provider's lines",
            "GET",
            f"{base}/lines",
            one + "/lines",
            h("invoices:submit", org=other_provider, sub="p6"),
            404,
            "not-visible",
            "p6",
        ),
        (
            "other commissioner approves",
            "POST",
            f"{base}/approve",
            one + "/approve",
            h("invoices:validate", org="X24", sub="p7"),
            404,
            "not-visible",
            "p7",
        ),
        (
            "finance reads lines",
            "GET",
            f"{base}/lines",
            one + "/lines",
            h("invoices:read", org=commissioner, sub="p8"),
            403,
            "lines-not-for-finance",
            "p8",
        ),
        (
            "provider approves",
            "POST",
            f"{base}/approve",
            one + "/approve",
            h("invoices:submit", org=provider, sub="p9"),
            403,
            "insufficient-scope",
            "p9",
        ),
        (
            "approving too early",
            "POST",
            f"{base}/approve",
            one + "/approve",
            h("invoices:validate", org=commissioner, sub="p10"),
            409,
            "queries-pending",
            "p10",
        ),
        (
            "deciding a valid line",
            "POST",
            f"{base}/lines/{valid_line}/decision",
            one + "/lines/{line_ref}/decision",
            h("invoices:validate", org=commissioner, sub="p11"),
            409,
            "invalid-transition",
            "p11",
        ),
        (
            "list filter naming another organisation",
            "GET",
            f"/v1/invoices?provider_code={NHS_SHAPED}",
            "/v1/invoices",
            h("invoices:submit", org=provider, sub="p12"),
            403,
            "other-organisation",
            "p12",
        ),
    ]
    for name, method, url, route, headers, status, reason, sub in cases:
        before = len(_outbox(api))
        r = await api.client.request(method, url, headers=headers, json={"decision": "accept", "amount": "1"})
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        new = _outbox(api)[before:]
        assert len(new) == 1, f"{name}: {new}"
        event = new[0]
        assert (event["type"], event["outcome"], event["source"]) == (
            "access.refused",
            "denied",
            "cef-api",
        ), name
        assert event["detail"]["route"] == route, name
        assert (event["detail"]["method"], event["detail"]["status"]) == (method, status), name
        assert event["detail"]["reason"] == reason, name
        assert event["actor"]["sub"] == sub, name
    missing = await api.client.get(base, headers=_without_claim(dev_issuer, "exp", "p2"))
    assert "the token has no 'exp' claim" in missing.json()["detail"]
    dumped = json.dumps(_outbox(api))
    assert NHS_SHAPED not in dumped
    assert invoice["id"] not in json.dumps(
        [e["detail"] for e in _outbox(api) if e["type"] == "access.refused"]
    )


async def test_another_organisations_invoice_is_answered_as_a_missing_one(
    submitted: tuple[Api, dict, generate_world.Invoice], dev_issuer: DevIssuer
) -> None:
    api, invoice, inv = submitted
    other_provider = "RVW" if inv.header["provider_code"] != "RVW" else "RTR"
    callers = {
        "provider": dev_issuer.headers("invoices:submit", org=other_provider),
        "staff": dev_issuer.headers("invoices:validate", org="X24"),
        "finance": dev_issuer.headers("invoices:read", org="X24"),
    }
    for who, headers in callers.items():
        for method, suffix in (("GET", ""), ("GET", "/lines"), ("POST", "/approve")):
            if suffix == "/approve" and who != "staff":
                continue
            answers = []
            for invoice_id in (invoice["id"], str(uuid.uuid4())):
                r = await api.client.request(method, f"/v1/invoices/{invoice_id}{suffix}", headers=headers)
                body = r.json()
                body.pop("instance")  # the caller's own path, whichever it sent
                answers.append((r.status_code, r.headers["content-type"], body))
            existing, missing = answers
            assert existing == missing, f"{who} {method} {suffix}"
            assert existing[0] == 404
    # Only the hidden ones are refusals on record (the missing ones hide nothing): 2 + 3 + 2.
    hidden = [e for e in _outbox(api) if e["type"] == "access.refused"]
    assert len(hidden) == 7
    assert {e["detail"]["reason"] for e in hidden} == {"not-visible"}


async def test_a_flood_of_refusals_is_recorded_up_to_the_limit_and_counted_beyond(
    data_dir: Path, sqlite_api_db: str, dev_issuer: DevIssuer
) -> None:
    settings = api_settings(data_dir, sqlite_api_db, "http://127.0.0.1:9", refusal_audit_limit=7)
    async with running_api(settings, dev_issuer) as api:
        for n in range(1000):
            r = await api.client.get(
                f"/v1/invoices/{uuid.uuid4()}", headers={"Authorization": f"Bearer bad-token-{n}"}
            )
            assert r.status_code == 401
        during = [e for e in _outbox(api) if e["type"].startswith("access.")]
        assert [e["type"] for e in during] == ["access.refused"] * 7
    engine = sa.create_engine(sqlite_api_db)
    try:
        with engine.connect() as conn:
            events = [json.loads(p) for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox"))]
    finally:
        engine.dispose()
    [suppressed] = [e for e in events if e["type"] == "access.refusals_suppressed"]
    assert (suppressed["detail"]["dropped"], suppressed["detail"]["recorded"]) == (993, 7)
    assert suppressed["detail"]["window_seconds"] == settings.refusal_audit_window_seconds
    assert "bad-token" not in json.dumps(events)


async def test_a_refused_submission_stores_no_nhs_number_shaped_provider_code(
    sqlite_api: Api, world: generate_world.World
) -> None:
    await sqlite_api.load_world(world)
    inv = world.invoices[0]
    header = {**inv.header, "provider_code": NHS_SHAPED}
    r = await sqlite_api.submit(header, inv.backing, org=inv.header["provider_code"])
    assert r.status_code == 403
    events = [e for e in _outbox(sqlite_api) if e["type"] != "reference.load"]
    # One event: the submission's own, not a second one from the shared refusal auditor.
    assert [(e["type"], e["outcome"]) for e in events] == [("invoice.submit", "denied")]
    assert events[0]["detail"]["provider_code"]["length"] == len(NHS_SHAPED)
    assert [t for t, v in database_values(sqlite_api.app.state.engine) if NHS_SHAPED in v] == []
    # The caller's own organisation, known to the reference data, is recorded as itself.
    header = {**inv.header, "commissioner_code": "99Z"}
    r = await sqlite_api.submit(header, inv.backing)
    assert r.status_code == 422
    assert _outbox(sqlite_api)[-1]["detail"]["provider_code"] == inv.header["provider_code"]


async def test_an_invoice_number_is_recorded_only_as_a_digest(
    sqlite_api: Api, world: generate_world.World
) -> None:
    await sqlite_api.load_world(world)
    inv = world.invoices[0]
    # Free text of the provider's choosing: whatever it holds, the audit log holds only its digest.
    number = "RTR-Jane-Doe-77"
    r = await sqlite_api.submit({**inv.header, "invoice_number": number}, inv.backing)
    assert r.status_code == 201, r.text
    outbox = [v for t, v in database_values(sqlite_api.app.state.engine) if t == "audit_outbox"]
    assert outbox
    assert not [v for v in outbox if number in v]
    [submit] = [e for e in _outbox(sqlite_api) if e["type"] == "invoice.submit"]
    assert submit["detail"]["invoice_number"]["length"] == len(number)
