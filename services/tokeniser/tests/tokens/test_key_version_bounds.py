"""A key_version beyond the column that stores versions is the caller's mistake (422 naming it), not
a token store outage (503) nor a crash (500)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.parametrize("key_version", [2**31, 2**63, 2**64 - 1])
async def test_a_key_version_beyond_any_key_is_422_naming_it(
    db_client: Any, headers: Callable[..., dict[str, str]], key_version: int
) -> None:
    body = {"kind": "nhs_number", "values": ["9434765919"], "key_version": key_version}
    r = await db_client.post("/v1/tokenise", json=body, headers=headers("tokenise"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [
        {"field": "key_version", "message": "must be a positive integer naming an existing key version"}
    ]


async def test_the_largest_key_version_is_looked_up(
    db_client: Any, headers: Callable[..., dict[str, str]]
) -> None:
    body = {"kind": "nhs_number", "values": ["9434765919"], "key_version": 2**31 - 1}
    r = await db_client.post("/v1/tokenise", json=body, headers=headers("tokenise"))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unknown-key-version"
