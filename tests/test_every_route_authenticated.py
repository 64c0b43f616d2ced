"""No endpoint of any service answers without a valid bearer token, now or after a new one is added."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute

import cef_api.main
import cef_audit.main
import cef_tokeniser.main
from cef_api.config import Settings as ApiSettings
from cef_audit.config import Settings as AuditSettings
from cef_common.testing import DatabaseFactory, DevIssuer, app_client
from cef_tokeniser.config import Settings as TokeniserSettings
from cef_tokeniser.keys import ensure_dev_master_key

PUBLIC = {"/healthz", "/readyz", "/.well-known/jwks.json"}


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        else:
            inner = getattr(route, "router", None) or getattr(route, "original_router", None)
            if inner is not None:
                yield from _routes(inner.routes, prefix + (getattr(route, "prefix", "") or ""))


def _app(service: str, data_dir: Path, database_factory: DatabaseFactory) -> FastAPI:
    # Every refusal of the test is to be on record, so the per-caller limit is out of its way.
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "environment": "test",
        "dev_issuer_enabled": True,
        "refusal_audit_limit": 100_000,
    }
    if service == "tokeniser":
        master = data_dir / "keys" / "master.key"
        ensure_dev_master_key(master)
        url = database_factory("sqlite", cef_tokeniser.main.MIGRATIONS)
        return cef_tokeniser.main.create_app(
            TokeniserSettings(**common, database_url=url, master_key_file=master)
        )
    if service == "cef-api":
        url = database_factory("sqlite", cef_api.main.MIGRATIONS)
        return cef_api.main.create_app(ApiSettings(**common, database_url=url))
    url = database_factory("sqlite", cef_audit.main.MIGRATIONS)
    return cef_audit.main.create_app(AuditSettings(**common, database_url=url))


def _refusals(service: str, engine: sa.Engine) -> list[dict[str, Any]]:
    """The refusal events a service has recorded: in its outbox, or the audit service's own log."""
    with engine.connect() as conn:
        if service == "audit":
            rows = conn.execute(sa.text("SELECT canonical FROM audit_events ORDER BY seq"))
            events = [json.loads(bytes(c)) for (c,) in rows]
        else:
            rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
            events = [json.loads(p) for (p,) in rows]
    return [e for e in events if e["type"] == "access.refused"]


@pytest.mark.parametrize("service", ["tokeniser", "cef-api", "audit"])
async def test_every_endpoint_refuses_a_request_without_a_valid_token(
    service: str, data_dir: Path, database_factory: DatabaseFactory, dev_issuer: DevIssuer
) -> None:
    app = _app(service, data_dir, database_factory)
    routes = [(path, route) for path, route in _routes(app.routes) if path not in PUBLIC]
    assert len(routes) >= 3, "the service's routers are not mounted"
    wrong_audience = dev_issuer.headers("tokenise invoices:submit audit:read audit:write", aud="nobody")
    refused: Counter[tuple[str, str, str]] = Counter()
    # A path segment shaped like an NHS number: the events name the route template, never the path.
    segment = "9990394083"
    async with app_client(app) as client:
        for path, route in routes:
            concrete = re.sub(r"\{[^}]+\}", segment, path)
            for method in route.methods:
                for headers, reason in (
                    ({}, "no-token"),
                    ({"Authorization": "Bearer not-a-jwt"}, "malformed-token"),
                    (wrong_audience, "wrong-audience"),
                ):
                    r = await client.request(method, concrete, headers=headers)
                    who = headers or "no token"
                    assert r.status_code == 401, f"{method} {path} with {who}: {r.status_code}"
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    # Events name the template as the OpenAPI document does: `{id}`, not `{id:path}`.
                    refused[(re.sub(r"\{(\w+):\w+\}", r"{\1}", path), method, reason)] += 1
        events = _refusals(service, app.state.engine)
    # Every 401 is exactly one denied event, naming the route's template, the method and why.
    recorded = Counter((e["detail"]["route"], e["detail"]["method"], e["detail"]["reason"]) for e in events)
    assert recorded == refused
    assert {(e["outcome"], e["detail"]["status"]) for e in events} == {("denied", 401)}
    assert segment not in json.dumps(events)
    assert "not-a-jwt" not in json.dumps(events)
