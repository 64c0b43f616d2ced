"""The outgoing HTTP client: timeouts, bounded retries with jitter for idempotent requests and
connection failures only, request id propagated, a client span per call whose traceparent is sent
(cef_common.tracing), the service token attached."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator

import httpx
import structlog

from cef_common import tracing
from cef_common.context import request_id_var

log = structlog.get_logger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


class TraceAuth(httpx.Auth):
    """Opens a client span around each call (retries included) and sends its traceparent, under
    the current request's span. Works for sync and async clients; a call that already carries a
    traceparent is sent as it is."""

    def prepare(self, request: httpx.Request) -> None:
        """Headers to add before the call (none here)."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.prepare(request)
        if "traceparent" in request.headers:
            yield request
            return
        span = tracing.start_client_span(request.method, request.url.host, request.url.port)
        tracing.inject(span, request.headers)
        status: int | None = None
        try:
            response = yield request
            status = response.status_code
        finally:
            # Also when the call failed (httpx closes this flow): the span then says so.
            tracing.end_client_span(span, status)


class _ContextAuth(TraceAuth):
    def __init__(self, token: Callable[[], str] | None) -> None:
        self._token = token

    def prepare(self, request: httpx.Request) -> None:
        if self._token is not None and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {self._token()}"
        rid = request_id_var.get()
        if rid and "x-request-id" not in request.headers:
            request.headers["X-Request-ID"] = rid


class RetryingTransport(httpx.BaseTransport):
    """Retries connection failures for any method (nothing reached the server), and 502/503/504
    only for idempotent methods or requests marked idempotent by the caller."""

    def __init__(self, inner: httpx.BaseTransport, *, retries: int, backoff: float = 0.2) -> None:
        self.inner = inner
        self.retries = retries
        self.backoff = backoff

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        idempotent = (
            request.method in IDEMPOTENT_METHODS or request.headers.get("idempotency-key") is not None
        )
        attempt = 0
        while True:
            try:
                response = self.inner.handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retries:
                    raise
                log.info(
                    "http_retry", reason=type(exc).__name__, attempt=attempt + 1, url=str(request.url.path)
                )
            else:
                if not (idempotent and response.status_code in RETRY_STATUSES and attempt < self.retries):
                    return response
                response.close()
                log.info(
                    "http_retry", reason=response.status_code, attempt=attempt + 1, url=str(request.url.path)
                )
            attempt += 1
            # Full jitter: spreads retries of many clients after a shared outage.
            time.sleep(random.uniform(0, self.backoff * (2**attempt)))

    def close(self) -> None:
        self.inner.close()


def make_client(
    base_url: str,
    *,
    token: Callable[[], str] | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    retries: int = 3,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A synchronous client for one peer service."""
    inner = transport or httpx.HTTPTransport()
    return httpx.Client(
        base_url=base_url,
        auth=_ContextAuth(token),
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        transport=RetryingTransport(inner, retries=retries),
        headers={"User-Agent": "cef-service"},
    )
