"""A checkpoint length the log could never reach is the caller's mistake: a 422 naming `length`,
never a database overflow (beyond 2**63) or an audit event that cannot be recorded (beyond 2**53)."""

from __future__ import annotations

from typing import Any

import pytest

BEYOND_BIGINT = 10_000_000_000_000_000_001  # above 2**63 - 1
BEYOND_JSON = 2**53 + 1  # a BIGINT, but no exact JSON number: the query's own event could not hold it


def _assert_names_length(r: Any) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "validation-error"
    assert body["detail"].startswith("length:")
    assert [e["field"] for e in body["errors"]] == ["length"]
    assert "event" not in body["detail"]


@pytest.mark.parametrize("length", [BEYOND_BIGINT, 2**63, BEYOND_JSON])
async def test_a_length_beyond_the_log_is_422_naming_it(
    client: Any, reader: dict[str, str], length: int
) -> None:
    _assert_names_length(await client.get("/v1/checkpoints", params={"length": length}, headers=reader))
    _assert_names_length(await client.get(f"/v1/checkpoints/{length}", headers=reader))


async def test_the_largest_length_is_still_looked_up(client: Any, reader: dict[str, str]) -> None:
    for r in (
        await client.get("/v1/checkpoints", params={"length": 2**53 - 1}, headers=reader),
        await client.get(f"/v1/checkpoints/{2**53 - 1}", headers=reader),
    ):
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "no-checkpoint"


async def test_a_length_in_another_script_is_422(client: Any, reader: dict[str, str]) -> None:
    r = await client.get("/v1/checkpoints/\u00b9", headers=reader)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["length"]
