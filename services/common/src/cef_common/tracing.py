"""OpenTelemetry traces: a tracer provider per service, a server span per request, a client span per
outgoing call, W3C `traceparent` in and out.

The request middleware (cef_common.app) opens the server span, continuing the caller's trace when
its `traceparent` is well formed, and makes it the current span: log lines then carry its trace id
(cef_common.logging), and outgoing calls (cef_common.http, the web app's clients) open client
spans under it and send their own `traceparent`. `context.traceparent_var` holds the server span's
traceparent, so code that reads it (or `context.child_traceparent`) agrees with OpenTelemetry.

Spans are exported over OTLP/HTTP only when OTLP_ENDPOINT is set; otherwise they are made (their
ids are what the headers and logs carry) and dropped, with nothing written anywhere. Span names
and attributes hold route templates, methods, statuses and peer host names: never a raw path, a
query string or anything else a caller typed."""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cef_common.context import TRACEPARENT_SHAPE, traceparent_var
from cef_common.settings import BaseServiceSettings

PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "cef_common"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TRACES_PATH = "/v1/traces"
SAMPLED = 0x01

# Spans made outside any service's lifespan (a test, a CLI) are given ids and dropped.
_FALLBACK = TracerProvider(shutdown_on_exit=False).get_tracer(INSTRUMENTATION)
# The tracer of the service whose request is being handled (set by the request middleware): tests
# run several services in one process, and each request's spans belong to its own service.
tracer_var: ContextVar[Tracer | None] = ContextVar("tracer", default=None)
# The process's service tracer for work outside a request (the outbox relay, background jobs).
_process_tracer: Tracer | None = None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector given by its base URL (or already by that URL)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def make_provider(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    otlp_headers: dict[str, str] | None = None,
    otlp_timeout: float = 10.0,
    sample_ratio: float = 1.0,
    version: str | None = None,
) -> TracerProvider:
    """A provider for one service: sampled by trace id (the caller's decision kept), exporting in
    batches over OTLP/HTTP when an endpoint is given, else exporting nowhere."""
    attributes: dict[str, Any] = {"service.name": service}
    if version:
        attributes["service.version"] = version
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        resource=Resource.create(attributes),
        # Shut down by the service's lifespan; an exit hook per provider would pile up in tests.
        shutdown_on_exit=False,
    )
    if otlp_endpoint:
        # Imported here: the exporter (and its HTTP stack) loads only where it is used.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=traces_url(otlp_endpoint), headers=otlp_headers or None, timeout=otlp_timeout
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class ServiceTracing:
    """A service app's tracer: a provider made when the service starts, flushed and shut down when
    it stops; before and after, spans still get ids (from the fallback) and are dropped."""

    def __init__(self, settings: BaseServiceSettings, version: str | None = None) -> None:
        self.settings = settings
        self.version = version
        self.provider: TracerProvider | None = None
        self.tracer: Tracer = _FALLBACK

    def start(self) -> None:
        global _process_tracer
        s = self.settings
        self.provider = make_provider(
            s.service_name,
            otlp_endpoint=s.otlp_endpoint,
            otlp_headers=s.otlp_headers,
            otlp_timeout=s.otlp_timeout_seconds,
            sample_ratio=s.trace_sample_ratio,
            version=self.version,
        )
        self.tracer = self.provider.get_tracer(INSTRUMENTATION, self.version)
        _process_tracer = self.tracer

    def stop(self) -> None:
        global _process_tracer
        if self.provider is None:
            return
        if _process_tracer is self.tracer:
            _process_tracer = None
        self.tracer = _FALLBACK
        # Sends what is still batched (bounded by the exporter's timeout).
        self.provider.shutdown()
        self.provider = None


def current_tracer() -> Tracer:
    """The tracer of the request being handled, else of the running service, else the fallback."""
    return tracer_var.get() or _process_tracer or _FALLBACK


def method_name(method: str | None) -> str:
    """The method as spans name it: a known one, else `_OTHER` (the caller's text stays out)."""
    return method if method in KNOWN_METHODS else "_OTHER"


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span`, with the sampled flag only: the Level 1 form every
    service has always sent (the SDK also sets Level 2's random-trace-id bit, which a Level 1
    reader must ignore anyway)."""
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags) & SAMPLED:02x}"


def context_from_traceparent(value: str | None) -> Context | None:
    """The remote parent a well-formed traceparent names (None for anything else: then a new trace
    starts). The shape is the one `context.accept_traceparent` has always accepted."""
    if not value or not TRACEPARENT_SHAPE.match(value):
        return None
    ctx = PROPAGATOR.extract({"traceparent": value})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def start_server_span(tracer: Tracer, method: str | None, traceparent: str | None) -> Span:
    """The server span of one request, a child of the caller's span when it sent a valid
    traceparent, else the root of a new trace. Named by method until routing names the route."""
    name = method_name(method)
    # An explicit empty context, not the current one: a request never inherits another's trace.
    parent = context_from_traceparent(traceparent) or Context()
    return tracer.start_span(
        name, context=parent, kind=SpanKind.SERVER, attributes={"http.request.method": name}
    )


def end_server_span(span: Span, method: str | None, route: str | None, status: int) -> None:
    name = method_name(method)
    if route:
        span.update_name(f"{name} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _parent_for_outgoing() -> Context | None:
    """The current span when there is one (None: start_span uses it), else the traceparent a
    caller put in `traceparent_var` (code outside the middleware), else an empty context."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    return context_from_traceparent(traceparent_var.get()) or Context()


def start_client_span(method: str, host: str | None, port: int | None = None) -> Span:
    """A client span for one outgoing call, a child of the current request's span. Named by the
    method; the peer by host and port only (the path may hold a caller's text)."""
    name = method_name(method)
    attributes: dict[str, Any] = {"http.request.method": name}
    if host:
        attributes["server.address"] = host
    if port:
        attributes["server.port"] = port
    return current_tracer().start_span(
        name, context=_parent_for_outgoing(), kind=SpanKind.CLIENT, attributes=attributes
    )


def end_client_span(span: Span, status: int | None) -> None:
    """Ends a client span: the status answered, or an error when nothing was (no connection)."""
    if status is None:
        span.set_status(Status(StatusCode.ERROR, "no response"))
    else:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def inject(span: Span, carrier: MutableMapping[str, str]) -> None:
    """Writes `span`'s traceparent (and the tracestate a caller sent, if any) into outgoing headers:
    the W3C propagator's headers, in the form `traceparent_of` gives."""
    carrier["traceparent"] = traceparent_of(span)
    state = span.get_span_context().trace_state
    if state:
        carrier["tracestate"] = state.to_header()


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), None outside any trace."""
    c = trace.get_current_span().get_span_context()
    return f"{c.trace_id:032x}" if c.is_valid else None
