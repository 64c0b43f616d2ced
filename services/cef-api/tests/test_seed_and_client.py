"""Start-up seeding from a reference directory, and the tokeniser client's batching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from api_support import REPO, api_settings, running_api

from cef_api.tokeniser_client import TokeniserClient, TokeniserUnavailable

DEMO = REPO / "demo" / "reference"


async def test_a_new_cef_seeds_reference_data_once(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any
) -> None:
    settings = api_settings(data_dir, sqlite_api_db, tokeniser.url, seed_reference_dir=DEMO)
    async with running_api(settings, dev_issuer) as api:
        listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
        assert sorted(i["dataset"] for i in listing["items"]) == sorted(
            [
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
            ]
        )
        assert {i["version"] for i in listing["items"]} == {1}
    async with running_api(settings, dev_issuer) as api:
        listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
        assert {i["version"] for i in listing["items"]} == {1}
        with api.app.state.engine.connect() as conn:
            events = [json.loads(p) for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox"))]
    seeded = [e for e in events if e["type"] == "reference.load"]
    assert len(seeded) == 11
    assert {e["actor"]["sub"] for e in seeded} == {"cef-api:seed"}


def _counting_client(calls: list[dict[str, Any]], status: int = 200) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        if status != 200:
            return httpx.Response(status, json={"detail": "nope"})
        return httpx.Response(
            200,
            json={
                "kind": body["kind"],
                "context": "cef",
                "key_version": body.get("key_version") or 3,
                "tokens": [f"t-{v}" for v in body["values"]],
                "errors": [],
            },
        )

    return httpx.Client(base_url="http://tokeniser", transport=httpx.MockTransport(handler))


def test_client_sends_one_call_per_batch_pinned_to_one_key_version() -> None:
    calls: list[dict[str, Any]] = []
    client = TokeniserClient(_counting_client(calls), batch_size=100_000)
    values = [f"{n:010d}" for n in range(250_000)]
    got = client.tokenise("nhs_number", values)
    assert [len(c["values"]) for c in calls] == [100_000, 100_000, 50_000]
    assert "key_version" not in calls[0]
    assert {c.get("key_version") for c in calls[1:]} == {3}
    assert got.key_version == 3
    assert got.tokens[:2] == ["t-0000000000", "t-0000000001"]


def test_client_reports_an_unavailable_tokeniser() -> None:
    client = TokeniserClient(_counting_client([], status=503), batch_size=10)
    with pytest.raises(TokeniserUnavailable, match="503"):
        client.tokenise("nhs_number", ["9434765919"])
