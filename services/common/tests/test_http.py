"""The outgoing client: bounded retries only where safe, context propagated, the token attached."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from cef_common import http
from cef_common.app import peer_client
from cef_common.auth import ServiceTokens, TokenSigner
from cef_common.context import request_id_var, traceparent_var
from cef_common.keys import jwks_path_for, load_signing_key
from cef_common.testing import ServerThread, free_port


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays are recorded, not slept."""
    delays: list[float] = []
    # Only the module's own reference: the process's time.sleep stays as it is.
    monkeypatch.setattr(http, "time", SimpleNamespace(sleep=delays.append))
    return delays


class Peer:
    """A scripted peer: each request gets the next outcome (an exception to raise or a status)."""

    def __init__(self, *outcomes: int | Exception) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome, json={"attempt": len(self.requests)})


def client(peer: Peer, retries: int = 3, token: Callable[[], str] | None = None) -> httpx.Client:
    return http.make_client(
        "http://peer.test", retries=retries, token=token, transport=httpx.MockTransport(peer)
    )


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_connection_failures_are_retried_for_any_method(method: str, no_sleep: list[float]) -> None:
    peer = Peer(connect_error(), httpx.ConnectTimeout("slow"), 200)
    response = client(peer).request(method, "/v1/things", content=b'{"a": 1}')
    assert response.status_code == 200
    assert len(peer.requests) == 3
    assert peer.bodies == [b'{"a": 1}'] * 3  # the body is sent whole on every attempt
    assert len(no_sleep) == 2


def test_connection_failures_are_bounded(no_sleep: list[float]) -> None:
    peer = Peer(connect_error())
    with pytest.raises(httpx.ConnectError):
        client(peer, retries=2).post("/v1/things", json={})
    assert len(peer.requests) == 3
    assert len(no_sleep) == 2
    assert all(0 <= d <= 0.2 * 2 ** (i + 1) for i, d in enumerate(no_sleep))


@pytest.mark.parametrize("status", [502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_gateway_errors_are_retried_for_idempotent_methods(method: str, status: int) -> None:
    peer = Peer(status, status, 200)
    assert client(peer).request(method, "/v1/things").status_code == 200
    assert len(peer.requests) == 3


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_gateway_errors_are_not_retried_for_other_methods(method: str) -> None:
    peer = Peer(503, 200)
    assert client(peer).request(method, "/v1/things", json={}).status_code == 503
    assert len(peer.requests) == 1


def test_a_post_with_an_idempotency_key_is_retried() -> None:
    peer = Peer(502, 504, 201)
    response = client(peer).post("/v1/things", json={"a": 1}, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 201
    assert [r.headers["idempotency-key"] for r in peer.requests] == ["k-1"] * 3


def test_gateway_retries_are_bounded() -> None:
    peer = Peer(503)
    response = client(peer, retries=3).get("/v1/things")
    assert response.status_code == 503
    assert response.json() == {"attempt": 4}
    assert len(peer.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 404, 409, 429, 500, 501])
def test_other_statuses_are_never_retried(status: int) -> None:
    peer = Peer(status, 200)
    assert client(peer).get("/v1/things").status_code == status
    assert len(peer.requests) == 1


def test_a_read_timeout_is_not_retried() -> None:
    """The request may have reached the peer: only the caller can decide to send it again."""
    peer = Peer(httpx.ReadTimeout("slow"), 200)
    with pytest.raises(httpx.ReadTimeout):
        client(peer).post("/v1/things", json={})
    assert len(peer.requests) == 1


def test_no_retries_when_disabled() -> None:
    peer = Peer(connect_error(), 200)
    with pytest.raises(httpx.ConnectError):
        client(peer, retries=0).get("/v1/things")
    assert len(peer.requests) == 1


def test_request_id_traceparent_and_token_are_sent() -> None:
    peer = Peer(200)
    issued: list[str] = []

    def token() -> str:
        issued.append(f"tok-{len(issued)}")
        return issued[-1]

    rid = request_id_var.set("req-7")
    tp = traceparent_var.set("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    try:
        c = client(peer, token=token)
        c.get("/v1/a")
        c.get("/v1/b", headers={"Authorization": "Bearer explicit"})
    finally:
        request_id_var.reset(rid)
        traceparent_var.reset(tp)
    first, second = peer.requests
    assert first.headers["authorization"] == "Bearer tok-0"
    assert second.headers["authorization"] == "Bearer explicit"
    assert first.headers["x-request-id"] == "req-7"
    parts = first.headers["traceparent"].split("-")
    assert parts[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parts[2] != "00f067aa0ba902b7"
    assert first.headers["traceparent"] != second.headers["traceparent"]  # a new span per call


def test_without_a_request_context_a_trace_is_started() -> None:
    peer = Peer(200)
    client(peer).get("/v1/a")
    (request,) = peer.requests
    assert "x-request-id" not in request.headers
    assert "authorization" not in request.headers
    assert len(request.headers["traceparent"].split("-")[1]) == 32


def test_a_refused_connection_on_a_real_socket_is_retried_then_raised(no_sleep: list[float]) -> None:
    c = http.make_client(f"http://127.0.0.1:{free_port()}", retries=2, connect_timeout=2)
    with pytest.raises(httpx.ConnectError):
        c.get("/healthz")
    assert len(no_sleep) == 2


@pytest.fixture
def peer_server(make_app: Any, data_dir: Path) -> Iterator[tuple[str, Path]]:
    """The test service trusting a peer 'caller-svc' whose key is under data_dir/peer."""
    key_path = data_dir / "peer" / "caller-svc.pem"
    load_signing_key(key_path, create=True)
    jwks = str(jwks_path_for(key_path))
    issuer = {"issuer": "caller-svc", "jwks_file": jwks, "allowed_scopes": ["things:read"]}
    app = make_app(trusted_issuers=[issuer])
    with ServerThread(app) as server:
        yield server.url, key_path


def test_peer_client_calls_with_its_own_token_and_context(
    peer_server: tuple[str, Path], settings_cls: Any, data_dir: Path
) -> None:
    url, key_path = peer_server
    settings = settings_cls(data_dir=data_dir, service_name="caller-svc")
    tokens = ServiceTokens(TokenSigner(load_signing_key(key_path, create=False), "caller-svc"), "caller-svc")
    rid = request_id_var.set("peer-call-1")
    try:
        with peer_client(
            settings, tokens, base_url=url, audience="common-test", scopes=["things:read", "things:write"]
        ) as c:
            response = c.get("/v1/whoami")
    finally:
        request_id_var.reset(rid)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "peer-call-1"
    # The peer's allowed_scopes drop what this caller may not be granted.
    assert response.json() == {
        "sub": "caller-svc",
        "org": None,
        "issuer": "caller-svc",
        "client": "caller-svc",
        "scopes": ["things:read"],
    }
