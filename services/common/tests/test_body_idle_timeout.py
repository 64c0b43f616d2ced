"""The request middleware's idle limit on reading a body: a body that stalls is cut off with 408
problem+json, a slow one that keeps arriving is not, and waiting after the body is unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel

from cef_common.app import RequestContextMiddleware
from cef_common.errors import install_error_handlers

IDLE = 0.3


class Body(BaseModel):
    values: list[str]


def _app() -> RequestContextMiddleware:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/json")
    def json_body(body: Body) -> dict[str, int]:
        return {"values": len(body.values)}

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"bytes": size}

    return RequestContextMiddleware(app, default_limit=1_000_000, idle_timeout=IDLE)


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }


async def _call(path: str, receive: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(_app()(_scope(path), receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {**orjson.loads(body), "headers": dict(start["headers"])}


def _stalling(first: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Sends `first` as the start of a longer body, then nothing."""
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.Event().wait()  # never set: the client stalls
        raise AssertionError("unreachable")

    return receive


async def test_a_stalled_json_body_is_408_not_400() -> None:
    status, body = await _call("/json", _stalling(b'{"values": ["a'))
    assert status == 408
    assert body["code"] == "request-timeout"
    assert "send it again" in body["detail"]
    assert body["headers"][b"content-type"] == b"application/problem+json"
    assert body["headers"][b"connection"] == b"close"


async def test_a_stalled_streamed_body_is_408() -> None:
    status, body = await _call("/stream", _stalling(b"x" * 100))
    assert status == 408
    assert body["code"] == "request-timeout"


async def test_a_slow_body_that_keeps_arriving_is_read_whole() -> None:
    parts = [b"y" * 10] * 6
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent < len(parts):
            # Each part well within the idle limit, the whole body well beyond it.
            await asyncio.sleep(IDLE / 3)
            sent += 1
            return {"type": "http.request", "body": parts[sent - 1], "more_body": sent < len(parts)}
        await asyncio.Event().wait()  # after the body: waiting for a disconnect, never a timeout
        raise AssertionError("unreachable")

    status, body = await _call("/stream", receive)
    assert status == 200
    assert body["bytes"] == 60
