"""The shape every service shares: app factory, lifespan, middleware, health and readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy import text
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cef_common import db, redact, tracing
from cef_common.audit import OutboxRelay
from cef_common.auth import ServiceTokens, TokenVerifier
from cef_common.context import accept_request_id, request_id_var, traceparent_var
from cef_common.errors import (
    PayloadTooLarge,
    RequestTimeout,
    install_error_handlers,
    problem_response,
    route_template,
)
from cef_common.http import make_client
from cef_common.keys import load_signing_key
from cef_common.logging import configure_logging
from cef_common.metrics import OutboxCollector, ServiceMetrics
from cef_common.openapi import (
    JWKS_RESPONSES,
    health_responses,
    install_openapi,
    operation_id,
    ready_responses,
    serve_docs,
)
from cef_common.params import refuse_nul_characters
from cef_common.refusals import RefusalAuditor, RefusalSink, outbox_sink
from cef_common.settings import BaseServiceSettings

log = structlog.get_logger("cef.access")


def _too_large(detail: str, path: str | None) -> Response:
    return problem_response(
        status=413, code="payload-too-large", title="Payload too large", detail=detail, instance=path
    )


def _stalled(idle_timeout: float, path: str | None) -> Response:
    return problem_response(
        status=408,
        code="request-timeout",
        title="Request timeout",
        detail=_stalled_detail(idle_timeout),
        instance=path,
        headers={"Connection": "close"},
    )


def _stalled_detail(idle_timeout: float) -> str:
    return (
        f"no part of the request body arrived for {idle_timeout:g} s, so the request was cut off and "
        "nothing of it was kept; send it again"
    )


class RequestContextMiddleware:
    """Request id and trace context (a server span) for every request, a body size limit, an idle
    limit on reading the body, one access line, and the request's count and latency in the metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        limits: Sequence[tuple[str, int]] = (),
        idle_timeout: float | None = None,
        metrics: ServiceMetrics | None = None,
        tracer: tracing.ServiceTracing | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracer
        self.default_limit = default_limit
        # A body that stalls longer than this between two parts is cut off (408): an upload must not
        # hold a connection, a worker and a spool file for ever.
        self.idle_timeout = idle_timeout
        # Longest prefix first, so the most specific limit wins.
        self.limits = sorted(limits, key=lambda pl: -len(pl[0]))

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = accept_request_id(headers.get("x-request-id"))
        # The server span continues the caller's trace (a well-formed traceparent) or starts one;
        # current for the whole request, so log lines and outgoing calls carry its trace id.
        tracer = self.tracing.tracer if self.tracing is not None else tracing.current_tracer()
        span = tracing.start_server_span(tracer, scope.get("method"), headers.get("traceparent"))
        tp = tracing.traceparent_of(span)
        otel_token = otel_context.attach(trace.set_span_in_context(span))
        tracer_token = tracing.tracer_var.set(tracer)
        rid_token = request_id_var.set(rid)
        tp_token = traceparent_var.set(tp)
        structlog.contextvars.bind_contextvars(request_id=rid)
        path: str = scope["path"]
        limit = self._limit_for(path)
        started = time.perf_counter()
        status = 500
        over_limit = False
        stalled = False
        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, replaced
            if replaced:
                return
            if over_limit and message["type"] == "http.response.start" and message["status"] != 413:
                # FastAPI turns any failure while reading a JSON body into a 400; the cause
                # here is the size, so the caller is told that instead.
                replaced = True
                too_large = _too_large(
                    f"the request body is over the limit of {limit} bytes for this endpoint",
                    route_template(scope),
                )
                await too_large(scope, receive, send_wrapper_inner)
                return
            if stalled and message["type"] == "http.response.start" and message["status"] != 408:
                replaced = True
                stalled_response = _stalled(self.idle_timeout or 0, route_template(scope))
                await stalled_response(scope, receive, send_wrapper_inner)
                return
            await send_wrapper_inner(message)

        async def send_wrapper_inner(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", rid.encode()),
                    (b"traceparent", tp.encode()),
                ]
            await send(message)

        try:
            declared = headers.get("content-length")
            # ASCII digits only: '¹'.isdigit() is true, and int('¹') fails (h11 refuses such a header,
            # other servers may pass it on).
            if (
                declared is not None
                and redact.is_ascii_digits(declared, max_digits=30)
                and int(declared) > limit
            ):
                response = problem_response(
                    status=413,
                    code="payload-too-large",
                    title="Payload too large",
                    detail=f"the request body is {int(declared)} bytes; the limit is {limit} bytes",
                    # Not routed yet: no template to name, and the raw path is the caller's text.
                    instance=None,
                )
                await response(scope, receive, send_wrapper)
                return
            received = 0
            body_done = False

            async def limited_receive() -> Message:
                nonlocal received, over_limit, stalled, body_done
                if body_done or self.idle_timeout is None:
                    # Once the body is in, receive() waits for the client to disconnect: no limit.
                    message = await receive()
                else:
                    try:
                        message = await asyncio.wait_for(receive(), self.idle_timeout)
                    except TimeoutError:
                        stalled = True
                        raise RequestTimeout(
                            _stalled_detail(self.idle_timeout), headers={"Connection": "close"}
                        ) from None
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_done = True
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        over_limit = True
                        raise PayloadTooLarge(
                            f"the request body is over the limit of {limit} bytes for this endpoint"
                        )
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            # The router has put the matched route in the shared scope by now: the line names its
            # template, never the raw path (its segments are the caller's text) nor the query.
            template = route_template(scope)
            elapsed = time.perf_counter() - started
            log.info(
                "request",
                method=scope.get("method"),
                path=template or "(no route)",
                **({} if template else {"path_digest": redact.digest(path)}),
                status=status,
                duration_ms=round(elapsed * 1000, 1),
            )
            if self.metrics is not None:
                self.metrics.observe_request(scope.get("method") or "", template, status, elapsed)
            tracing.end_server_span(span, scope.get("method"), template, status)
            structlog.contextvars.unbind_contextvars("request_id", "caller", "caller_org")
            request_id_var.reset(rid_token)
            traceparent_var.reset(tp_token)
            tracing.tracer_var.reset(tracer_token)
            otel_context.detach(otel_token)


@dataclass
class ServiceSpec:
    """What a service tells the shared factory about itself."""

    settings: BaseServiceSettings
    title: str
    description: str
    migrations: Path
    routers: list[APIRouter] = field(default_factory=list)
    # Start the audit outbox relay towards this URL (producers only).
    audit_url: str | None = None
    # Extra start-up/shut-down for the service, entered inside the shared lifespan.
    lifespan: Callable[[FastAPI], AbstractContextManager[Any]] | None = None
    # The same for work that must be awaited (async clients), entered inside `lifespan`.
    async_lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None
    body_limits: list[tuple[str, int]] = field(default_factory=list)
    # Where refusals are recorded; None: the transactional outbox of the service's database.
    refusal_sink: Callable[[FastAPI], RefusalSink] | None = None
    version: str = "0.1.0"


def _readiness(app: FastAPI, migrations: Path) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    try:
        with app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness must answer, whatever the failure
        checks["database"] = f"unreachable: {type(exc).__name__}"
        return False, checks
    head = db.head_revision(migrations)
    current = db.current_revision(app.state.engine)
    checks["migrations"] = "at head" if current == head else f"at {current}, head is {head}"
    return current == head, checks


def create_service_app(spec: ServiceSpec) -> FastAPI:
    settings = spec.settings
    configure_logging(level=settings.log_level, fmt=settings.log_format, service=settings.service_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service_tracing: tracing.ServiceTracing = app.state.tracing
        service_metrics: ServiceMetrics = app.state.metrics
        engine = db.make_engine(settings.effective_database_url)
        app.state.engine = engine
        relay: OutboxRelay | None = None
        service_tracing.start()
        # Whatever fails while starting or stopping, the relay thread and the engine are released:
        # the service's own hooks exit first, so events they record on the way out are relayed too.
        try:
            # Its own listener, never the public one; a production service will not start unobserved.
            service_metrics.serve(
                settings.metrics_host, settings.effective_metrics_port, required=settings.is_production
            )
            if spec.audit_url:
                tokens: ServiceTokens = app.state.service_tokens
                relay = OutboxRelay(
                    engine,
                    lambda: make_client(
                        spec.audit_url or "",
                        token=lambda: tokens.token_for("audit", ["audit:write"]),
                        connect_timeout=settings.http_connect_timeout,
                        read_timeout=settings.http_read_timeout,
                        retries=0,
                    ),
                    batch_size=settings.audit_relay_batch_size,
                    poll_interval=settings.audit_relay_poll_seconds,
                    max_backoff=settings.audit_relay_max_backoff_seconds,
                )
                relay.start()
            app.state.outbox_relay = relay
            async with AsyncExitStack() as stack:
                stack.enter_context(spec.lifespan(app) if spec.lifespan else nullcontext())
                if spec.async_lifespan:
                    await stack.enter_async_context(spec.async_lifespan(app))
                # Refusals are recorded while the service's own resources (its audit log) are up,
                # and what is still counted is recorded before the relay's last delivery.
                refusals: RefusalAuditor = app.state.refusals
                refusals.start(spec.refusal_sink(app) if spec.refusal_sink else outbox_sink(engine))
                try:
                    log.info("service_started", port=settings.port, environment=settings.environment)
                    yield
                finally:
                    refusals.close()
        finally:
            service_metrics.stop()
            if relay is not None:
                relay.stop()
            engine.dispose()
            # Last: the relay's final deliveries are traced too, then what is batched is exported.
            service_tracing.stop()

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version=spec.version,
        lifespan=lifespan,
        # Served from the service's own copy of the scripts below (cef_common.openapi), not a CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        dependencies=[Depends(refuse_nul_characters)],
    )
    app.state.settings = settings
    # Made here, not in the lifespan: a service registers its own metrics while it is being built.
    metrics = ServiceMetrics(settings.service_name)
    app.state.metrics = metrics
    app.state.tracing = tracing.ServiceTracing(settings, version=spec.version)
    if spec.audit_url:
        metrics.register(
            OutboxCollector(
                lambda: getattr(app.state, "engine", None),
                lambda: getattr(getattr(app.state, "outbox_relay", None), "failures", None),
            )
        )
    app.state.verifier = TokenVerifier.from_settings(settings)
    app.state.service_tokens = ServiceTokens.from_settings(settings)
    # Free values a caller sends are recorded as digests keyed by this service's own secret.
    redact.configure(app.state.service_tokens.signer.key.private_pem.encode())
    install_error_handlers(app)
    app.state.refusals = RefusalAuditor(
        source=settings.service_name,
        limit=settings.refusal_audit_limit,
        window_seconds=settings.refusal_audit_window_seconds,
        max_callers=settings.refusal_audit_max_callers,
        registry=metrics.registry,
    )
    app.state.on_refusal = app.state.refusals.on_refusal
    app.add_middleware(
        RequestContextMiddleware,
        default_limit=settings.max_body_bytes,
        limits=spec.body_limits,
        idle_timeout=settings.upload_idle_timeout_seconds,
        metrics=metrics,
        tracer=app.state.tracing,
    )

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="The process is alive",
        responses=health_responses(settings.service_name),
    )
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The database is reachable and migrated to head",
        responses=ready_responses(settings.service_name),
    )
    def readyz(request: Request) -> Response:
        ok, checks = _readiness(request.app, spec.migrations)
        body = {"status": "ready" if ok else "not ready", "service": settings.service_name, "checks": checks}
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    @app.get(
        "/.well-known/jwks.json",
        tags=["operations"],
        summary="This service's public signing keys",
        responses=JWKS_RESPONSES,
    )
    def jwks() -> dict[str, Any]:
        key = load_signing_key(settings.effective_signing_key_file, create=False)
        return key.jwks()

    for router in spec.routers:
        app.include_router(router)
    install_openapi(app, audience=settings.service_name)
    serve_docs(app)
    return app


def peer_client(
    settings: BaseServiceSettings,
    tokens: ServiceTokens,
    *,
    base_url: str,
    audience: str,
    scopes: Sequence[str],
    read_timeout: float | None = None,
) -> httpx.Client:
    """A client for calling a peer service with this service's own short-lived token."""
    return make_client(
        base_url,
        token=lambda: tokens.token_for(audience, scopes),
        connect_timeout=settings.http_connect_timeout,
        read_timeout=read_timeout or settings.http_read_timeout,
        retries=settings.http_retries,
    )
