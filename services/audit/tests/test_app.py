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
]


def _body(method: str, path: str) -> Any:
    if method != "POST":
        return None
    return {"checkpoints": []} if path == "/v1/verify" else event_json(1)


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_no_token_is_401(client: Any, method: str, path: str, scope: str) -> None:
    r = await client.request(method, path, json=_body(method, path))
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_bad_token_is_401(client: Any, stranger_key: Any, method: str, path: str, scope: str) -> None:
    from cef_common.auth import TokenSigner

    forged = TokenSigner(stranger_key, "cef-dev").mint(
        sub="x", audience="audit", scopes=[scope], ttl_seconds=60
    )
    r = await client.request(
        method, path, json=_body(method, path), headers={"Authorization": f"Bearer {forged}"}
    )
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_token_for_another_service_is_401(
    client: Any, dev_issuer: Any, method: str, path: str, scope: str
) -> None:
    headers = dev_issuer.headers(scope, aud="cef-api")
    r = await client.request(method, path, json=_body(method, path), headers=headers)
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_wrong_scope_is_403_and_recorded(
    client: Any, dev_issuer: Any, reader: dict[str, str], method: str, path: str, scope: str
) -> None:
    other = "audit:read" if scope == "audit:write" else "audit:write"
    headers = dev_issuer.headers(other, sub="mallory", org="ZZ1", aud="audit")
    r = await client.request(method, path, json=_body(method, path), headers=headers)
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient-scope"
    page = (await client.get("/v1/events", params={"actor": "mallory"}, headers=reader)).json()
    assert [(e["type"], e["outcome"], e["detail"]) for e in page["items"]] == [
        ("audit.access", "denied", {"missing_scope": scope})
    ]


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
