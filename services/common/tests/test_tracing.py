"""OpenTelemetry traces: a server span per request continuing the caller's traceparent, client spans
for outgoing calls carrying the same trace id, the outbox relay continuing the recording request's
trace, trace ids in log lines, and OTLP export only when configured."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog
from fastapi import APIRouter, FastAPI
from opentelemetry import context as otel_context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlmodel import Session

from cef_common import tracing
from cef_common.app import ServiceSpec, create_service_app
from cef_common.audit import OutboxRelay, build_event, outbox_table_ddl, record_event
from cef_common.context import child_traceparent, traceparent_var
from cef_common.db import make_engine
from cef_common.http import TraceAuth, make_client
from cef_common.testing import DevIssuer, app_client, free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE}-{CALLER_SPAN}-01"
# A path segment standing for what a caller types (a line reference): it must stay out of spans.
SEGMENT = "LINE-REF-77"


class Peer:
    """A peer service behind httpx's mock transport, keeping the requests it was sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"ok": True})

    def traceparent(self, n: int = 0) -> tuple[str, str]:
        """(trace id, parent span id) of the n-th request's traceparent."""
        _, trace_id, span_id, _ = self.requests[n].headers["traceparent"].split("-")
        return trace_id, span_id


def relaying_app(settings_cls: Any, data_dir: Path, sqlite_url: str, peer: Peer, **overrides: Any) -> FastAPI:
    """A service whose routes call a peer: synchronously through cef_common.http, and through an
    async client as the web app's are (TraceAuth)."""
    router = APIRouter()

    @router.get("/v1/relay/{thing}")
    def relay(thing: str) -> dict[str, str]:
        structlog.get_logger("cef.test").info("relaying")
        with make_client("http://peer.internal", transport=httpx.MockTransport(peer.handler), retries=0) as c:
            c.get(f"/v1/things/{thing}")
        return {"child": child_traceparent()}

    @router.get("/v1/async-relay/{thing}")
    async def async_relay(thing: str) -> dict[str, bool]:
        async with httpx.AsyncClient(
            base_url="http://peer.internal", transport=httpx.MockTransport(peer.handler), auth=TraceAuth()
        ) as c:
            await c.get(f"/v1/things/{thing}")
        return {"ok": True}

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": sqlite_url,
        "dev_issuer_enabled": True,
        "environment": "test",
        "log_format": "json",
    }
    values.update(overrides)
    return create_service_app(
        ServiceSpec(
            settings=settings_cls(**values),
            title="relaying test service",
            description="Calls a peer.",
            migrations=Path(__file__).parent / "migrations",
            routers=[router],
        )
    )


def recording(app: FastAPI) -> InMemorySpanExporter:
    """Keeps the spans of a started app in memory."""
    exporter = InMemorySpanExporter()
    app.state.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def span_named(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> ReadableSpan:
    (span,) = [s for s in spans if s.kind == kind]
    return span


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) of a finished span."""
    c = span.get_span_context()
    assert c is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{c.trace_id:032x}", f"{c.span_id:016x}", parent


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_the_callers_trace_is_continued_to_the_peer_and_in_the_logs(
    settings_cls: Any, data_dir: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = Peer()
    app = relaying_app(settings_cls, data_dir, sqlite_url, peer)
    async with app_client(app) as client:
        spans = recording(app)
        response = await client.get(f"/v1/relay/{SEGMENT}", headers={"traceparent": INCOMING})
    assert response.status_code == 200, response.text
    server = span_named(spans.get_finished_spans(), SpanKind.SERVER)
    outgoing = span_named(spans.get_finished_spans(), SpanKind.CLIENT)
    server_trace, server_id, server_parent = hex_ids(server)
    client_trace, client_id, client_parent = hex_ids(outgoing)
    # The caller's trace, continued by a new span under the caller's.
    assert (server_trace, server_parent) == (TRACE, CALLER_SPAN)
    assert response.headers["traceparent"] == f"00-{TRACE}-{server_id}-01"
    # The outgoing call is a client span under the server span, and the peer is told so.
    assert (client_trace, client_parent) == (TRACE, server_id)
    assert peer.traceparent() == (TRACE, client_id)
    # The home-made helper agrees: same trace, its own span.
    assert response.json()["child"].split("-")[1] == TRACE
    # Names and attributes: the route template, never the caller's segment.
    assert server.name == "GET /v1/relay/{thing}"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/relay/{thing}"
    assert outgoing.name == "GET"
    for span in (server, outgoing):
        assert SEGMENT not in span.name
        assert all(SEGMENT not in str(v) for v in (span.attributes or {}).values())
    # Every line the request logged carries its trace id.
    lines = [x for x in json_lines(capsys.readouterr().err) if x.get("event") in ("relaying", "request")]
    assert {x["event"] for x in lines} == {"relaying", "request"}
    assert all(x["trace_id"] == TRACE for x in lines)


async def test_an_async_client_call_carries_the_trace(
    settings_cls: Any, data_dir: Path, sqlite_url: str
) -> None:
    peer = Peer()
    app = relaying_app(settings_cls, data_dir, sqlite_url, peer)
    async with app_client(app) as client:
        spans = recording(app)
        response = await client.get(f"/v1/async-relay/{SEGMENT}", headers={"traceparent": INCOMING})
    assert response.status_code == 200
    _, client_id, client_parent = hex_ids(span_named(spans.get_finished_spans(), SpanKind.CLIENT))
    _, server_id, _ = hex_ids(span_named(spans.get_finished_spans(), SpanKind.SERVER))
    assert client_parent == server_id
    assert peer.traceparent() == (TRACE, client_id)


async def test_without_a_traceparent_each_request_starts_its_own_trace(
    settings_cls: Any, data_dir: Path, sqlite_url: str
) -> None:
    peer = Peer()
    app = relaying_app(settings_cls, data_dir, sqlite_url, peer)
    async with app_client(app) as client:
        first = await client.get("/v1/relay/a")
        second = await client.get(
            "/v1/relay/b", headers={"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"}
        )
    first_trace, second_trace = (r.headers["traceparent"].split("-")[1] for r in (first, second))
    assert first_trace != second_trace
    assert TRACE not in (first_trace, second_trace)
    assert [peer.traceparent(n)[0] for n in (0, 1)] == [first_trace, second_trace]


def test_an_unsampled_caller_is_followed_and_not_recorded() -> None:
    provider = tracing.make_provider("x")
    span = tracing.start_server_span(provider.get_tracer("t"), "GET", f"00-{TRACE}-{CALLER_SPAN}-00")
    assert tracing.traceparent_of(span).startswith(f"00-{TRACE}-")
    assert tracing.traceparent_of(span).endswith("-00")
    assert not span.is_recording()


def test_an_unknown_method_is_not_named() -> None:
    provider = tracing.make_provider("x")
    span = tracing.start_server_span(provider.get_tracer("t"), "SECRET9434765919", None)
    assert isinstance(span, ReadableSpan)
    assert span.name == "_OTHER"


@pytest.fixture
def outbox_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'producer.db'}")
    sa.Table("audit_outbox", sa.MetaData(), *outbox_table_ddl()).create(engine)
    yield engine
    engine.dispose()


def record_one(engine: sa.Engine) -> None:
    with Session(engine) as session:
        record_event(
            session,
            build_event(source="t", action="create", type="thing.made", outcome="success", principal=None),
        )
        session.commit()


def test_the_outbox_delivery_continues_the_recording_requests_trace(outbox_engine: sa.Engine) -> None:
    audit = Peer()

    def answer(request: httpx.Request) -> httpx.Response:
        audit.requests.append(request)
        events = json.loads(request.content)["events"]
        return httpx.Response(200, json={"results": [{"event_id": e["event_id"]} for e in events]})

    relay = OutboxRelay(
        outbox_engine, lambda: make_client("http://audit", transport=httpx.MockTransport(answer), retries=0)
    )
    # Recorded within a request's trace (here: the traceparent a caller's request set).
    token = traceparent_var.set(INCOMING)
    try:
        record_one(outbox_engine)
    finally:
        traceparent_var.reset(token)
    assert relay.drain() == 1
    trace_id, parent = audit.traceparent(0)
    assert (trace_id, parent) != (TRACE, CALLER_SPAN)  # a span of the relay's own, ...
    assert trace_id == TRACE  # ... in the recording request's trace
    # An event recorded outside any trace is delivered in a trace of its own.
    record_one(outbox_engine)
    assert relay.drain() == 1
    assert audit.traceparent(1)[0] != TRACE
    # The relay thread is left outside any trace.
    assert tracing.current_trace_id() is None
    assert otel_context.get_current() == otel_context.Context()


class Collector:
    """An OTLP/HTTP receiver on a free port, keeping what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.port = free_port()
        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(
    make_app: Any, dev_issuer: DevIssuer
) -> None:
    reader = dev_issuer.headers("things:read", aud="common-test", org="QX7")
    with Collector() as collector:
        app = make_app(otlp_endpoint=f"http://127.0.0.1:{collector.port}", otlp_headers={"X-Team": "cef"})
        async with app_client(app) as client:
            response = await client.get("/v1/orgs/QX7/things", headers={**reader, "traceparent": INCOMING})
            assert response.status_code == 200
        # Stopping the service sends what was batched.
    assert collector.received, "nothing was exported"
    paths = {path for path, _, _ in collector.received}
    assert paths == {"/v1/traces"}
    assert all(kind == "application/x-protobuf" for _, kind, _ in collector.received)
    spans = []
    services = set()
    for _, _, body in collector.received:
        assert b"QX7" not in body  # the org in the path is a caller's value: templates only
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                spans += list(scope_spans.spans)
    assert services == {"common-test"}
    (span,) = [s for s in spans if s.name == "GET /v1/orgs/{org}/things"]
    assert span.trace_id.hex() == TRACE
    assert span.parent_span_id.hex() == CALLER_SPAN


async def test_no_exporter_by_default(make_app: Any) -> None:
    app = make_app()
    async with app_client(app) as client:
        await client.get("/healthz")
        provider: Any = app.state.tracing.provider
        # No span processor: spans get ids (for headers and logs) and go nowhere.
        assert provider._active_span_processor._span_processors == ()
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"
