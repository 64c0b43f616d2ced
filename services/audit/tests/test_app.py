"""Every audit endpoint refuses callers without a valid token (401) or the right scope (403)."""

from __future__ import annotations

from typing import Any

import pytest
from audit_test_support import event_json

ENDPOINTS = [
    ("POST", "/v1/events", "audit:write"),
    ("GET", "/v1/events", "audit:read"),
    ("GET", "/v1/events/export", "audit:read"),
    ("GET", "/v1/verify", "audit:read"),
    ("POST", "/v1/verify", "audit:read"),
    ("GET", "/v1/checkpoints", "audit:read"),
    ("GET", "/v1/checkpoints/1", "audit:read"),
    ("GET", "/v1/entities/invoice-line/inv-1/L1/events", "audit:read"),
    ("GET", "/v1/summary", "audit:read"),
]
TEMPLATES = {
    "/v1/checkpoints/1": "/v1/checkpoints/{length}",
    "/v1/entities/invoice-line/inv-1/L1/events": "/v1/entities/{entity_type}/{entity_id}/events",
}


def _template(path: str) -> str:
    return TEMPLATES.get(path, path)


def _body(method: str, path: str) -> Any:
    if method != "POST":
        return None
    return {"checkpoints": []} if path == "/v1/verify" else event_json(1)


async def _refusals(client: Any, reader: dict[str, str]) -> list[dict[str, Any]]:
    params = {"type": "access.refused"}
    items: list[dict[str, Any]] = (await client.get("/v1/events", params=params, headers=reader)).json()[
        "items"
    ]
    return items


def _assert_one_refusal(
    items: list[dict[str, Any]], method: str, path: str, status: int, reason: str, sub: str = "anonymous"
) -> dict[str, Any]:
    assert len(items) == 1, items
    event = items[0]
    assert (event["outcome"], event["source"], event["actor"]["sub"]) == ("denied", "audit", sub)
    assert event["detail"]["route"] == _template(path)
    assert (event["detail"]["method"], event["detail"]["status"]) == (method, status)
    assert event["detail"]["reason"] == reason
    return event


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_no_token_is_401_and_recorded(
    client: Any, reader: dict[str, str], method: str, path: str, scope: str
) -> None:
    r = await client.request(method, path, json=_body(method, path))
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    _assert_one_refusal(await _refusals(client, reader), method, path, 401, "no-token")


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_bad_token_is_401_and_recorded_as_a_digest(
    client: Any, reader: dict[str, str], stranger_key: Any, method: str, path: str, scope: str
) -> None:
    from cef_common.auth import TokenSigner

    forged = TokenSigner(stranger_key, "cef-dev").mint(
        sub="x", audience="audit", scopes=[scope], ttl_seconds=60
    )
    r = await client.request(
        method, path, json=_body(method, path), headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status_code == 401
    event = _assert_one_refusal(await _refusals(client, reader), method, path, 401, "unknown-key")
    # The unverified token is on record only as a digest, never as itself.
    assert forged not in str(event)
    assert event["detail"]["token"]["length"] == len(forged)


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_token_for_another_service_is_401_and_names_its_verified_caller(
    client: Any, reader: dict[str, str], dev_issuer: Any, method: str, path: str, scope: str
) -> None:
    headers = dev_issuer.headers(scope, aud="cef-api", sub="eve")
    r = await client.request(method, path, json=_body(method, path), headers=headers)
    assert r.status_code == 401
    _assert_one_refusal(await _refusals(client, reader), method, path, 401, "wrong-audience", sub="eve")


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_wrong_scope_is_403_and_recorded_once(
    client: Any, dev_issuer: Any, reader: dict[str, str], method: str, path: str, scope: str
) -> None:
    other = "audit:read" if scope == "audit:write" else "audit:write"
    headers = dev_issuer.headers(other, sub="mallory", org="ZZ1", aud="audit")
    r = await client.request(method, path, json=_body(method, path), headers=headers)
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient-scope"
    page = (await client.get("/v1/events", params={"actor": "mallory"}, headers=reader)).json()
    assert len(page["items"]) == 1
    _assert_one_refusal(page["items"], method, path, 403, "insufficient-scope", sub="mallory")


async def test_health_and_jwks_are_open(client: Any) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["alg"] == "ES256"


async def test_openapi_documents_the_append_body(client: Any) -> None:
    spec = (await client.get("/openapi.json")).json()
    schema = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "anyOf" in schema or "oneOf" in schema
    assert "$defs" not in str(schema)
