"""The tokeniser on a real socket (uvicorn), as peers and the benchmark reach it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
from tokeniser_test_support import WORK

from cef_common.testing import ServerThread
from cef_tokeniser.config import Settings
from cef_tokeniser.main import create_app


def test_tokenise_and_detokenise_over_http(
    sqlite_url: str, make_settings: Callable[..., Settings], headers: Any
) -> None:
    app = create_app(make_settings(sqlite_url, max_body_bytes=200_000))
    values = ["9434765919", "943 476 5919", "bad"] * 1000
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        r = client.post(
            "/v1/tokenise",
            content=orjson.dumps({"kind": "nhs_number", "values": values}),
            headers={**headers("tokenise"), "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        tokens = r.json()["tokens"]
        assert len(tokens) == 3000
        assert len(set(tokens) - {None}) == 1
        assert len(r.json()["errors"]) == 1000
        r = client.post(
            "/v1/detokenise",
            json={"kind": "nhs_number", "tokens": tokens[:2], "purpose": "check", **WORK},
            headers=headers("detokenise", peer=True),
        )
        assert r.json()["values"] == ["9434765919", "9434765919"]
        too_big = orjson.dumps({"kind": "nhs_number", "values": ["9434765919"] * 20_000})
        r = client.post(
            "/v1/tokenise",
            content=too_big,
            headers={**headers("tokenise"), "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")
