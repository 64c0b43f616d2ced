"""Values no event or listing can hold are refused as the caller's mistake, naming what to fix:
a cursor beyond the log's integers, a time outside the calendar once in UTC, a NUL character."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from audit_test_support import event_json


def _cursor(seq: Any, order: str = "asc") -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"seq": seq, "order": order})).decode().rstrip("=")


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1, -1, True, "1"])
@pytest.mark.parametrize("path", ["/v1/events", "/v1/reidentifications"])
async def test_a_cursor_beyond_the_log_is_400(
    client: Any, reader: dict[str, str], path: str, seq: Any
) -> None:
    order = "asc" if path == "/v1/events" else "desc"
    r = await client.get(path, params={"cursor": _cursor(seq, order), "order": order}, headers=reader)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid-cursor"
    assert "cursor" in r.json()["detail"]


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/export", "/v1/reidentifications"])
async def test_a_time_outside_the_calendar_in_utc_is_400(
    client: Any, reader: dict[str, str], path: str, name: str, moment: str
) -> None:
    r = await client.get(path, params={name: moment}, headers=reader)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad-datetime"
    assert r.json()["detail"].startswith(name)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "invoice.\u0000read"}, "type"),
        ({"actor": {"sub": "user\u0000", "org": "RX1", "client": "portal"}}, "actor.sub"),
        ({"detail": {"note": "a\u0000b"}}, "detail.note"),
    ],
)
async def test_a_nul_character_is_422_naming_the_field(
    client: Any, writer: dict[str, str], change: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/events", json={**event_json(1), **change}, headers=writer)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "nul-character"
    assert r.json()["errors"] == [{"field": field, "message": "must not hold a NUL character"}]
    r = await client.post(
        "/v1/events", json={"events": [event_json(2), {**event_json(3), **change}]}, headers=writer
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == f"events.1.{field}"
    assert client.app.state.audit_log.head().length == 0
