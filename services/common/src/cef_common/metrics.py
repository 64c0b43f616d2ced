"""Prometheus metrics: one registry per service app, served on a listener of its own.

Every app built by `create_service_app` gets a `ServiceMetrics` (`app.state.metrics`): its own
`CollectorRegistry` (tests build many apps in one process; the global default registry would mix
them and refuse the second app's metrics), the request counters and latency histograms the request
middleware feeds, and room for a service's own counters and scrape-time collectors. `/metrics` is
served by a small threaded HTTP server on METRICS_PORT, never on the service's public listener.

Labels never carry an identifier or anything a caller typed: routes are templates
(`/v1/invoices/{invoice_id}`), methods and statuses are from fixed sets, refusal codes are the
services' own constants (and bounded in number all the same)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
# Latency buckets (seconds): most calls take milliseconds; a large upload or export takes minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# A method outside these is counted as "other": the method is the caller's text.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NO_ROUTE = "(no route)"
# Refusal codes are constants of the code, yet a label's values are kept bounded whatever happens.
_LABEL_VALUE = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,63}$")
MAX_CODES = 200
OTHER = "other"


class BoundedLabel:
    """The values one label may take: well-formed, and at most `limit` distinct ones; the rest are
    counted under OTHER, so no caller can grow a metric's series without bound."""

    def __init__(self, limit: int = MAX_CODES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not _LABEL_VALUE.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


class ServiceMetrics:
    """One service app's registry, its request metrics, and its /metrics listener."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cef_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cef_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: MetricsServer | None = None

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Counts one answered request (called once per request: two label lookups, no I/O)."""
        verb = method if method in KNOWN_METHODS else OTHER
        template = route or NO_ROUTE
        self.requests.labels(verb, template, str(status)).inc()
        self.latency.labels(verb, template).observe(seconds)

    def register(self, collector: Collector) -> None:
        """Adds a scrape-time collector (or a metric made with `registry=None`)."""
        self.registry.register(collector)

    # --- the listener ----------------------------------------------------------------------------

    def serve(self, host: str, port: int, *, required: bool = False) -> MetricsServer | None:
        """Starts the /metrics listener on host:port (port 0: off). When the port cannot be bound,
        raises if `required` (a production service must not run unobserved), else logs and carries
        on without it (a second local stack on the same machine)."""
        if port == 0:
            return None
        try:
            self._server = MetricsServer(self.registry, host, port)
        except OSError as exc:
            if required:
                raise RuntimeError(
                    f"the metrics listener could not bind {host}:{port} ({type(exc).__name__}); "
                    "free the port or set METRICS_PORT to another (0 turns metrics off)"
                ) from exc
            log.warning("metrics_listener_not_started", host=host, port=port, error=type(exc).__name__)
            return None
        log.info("metrics_listener_started", host=host, port=self._server.port, path=METRICS_PATH)
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class _QuietHandler(WSGIRequestHandler):
    """No access lines on stderr: a scraper calls every few seconds, and stderr is the log."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def _only_metrics(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """`app` at METRICS_PATH only; anything else is 404."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        return app(environ, start_response)

    return wsgi


class MetricsServer:
    """A threaded HTTP server answering GET /metrics from one registry, stoppable at shutdown."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._httpd = make_server(
            host.strip("[]"),
            port,
            _only_metrics(make_wsgi_app(registry)),
            server_class=server_class,
            handler_class=_QuietHandler,
        )
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# --- scrape-time collectors ----------------------------------------------------------------------


class DatabaseCollector:
    """A collector whose figures are read from the service's database when Prometheus scrapes, so
    they hold across replicas and need no hook in the code that changes them. A failed read is
    logged and leaves its metrics out of that scrape (a scrape must answer while the database is
    down; `up` and the readiness probe tell that story)."""

    name = "database"

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        # The engine exists only while the service runs (it is made in the lifespan).
        self._engine = engine

    def describe(self) -> Iterator[Metric]:
        # Describing without reading: registering must not touch a database that is not there yet.
        yield from self.families()

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:
            return
        families = self.families()
        try:
            with engine.connect() as conn:
                self.fill(conn, families)
        except Exception as exc:  # a scrape must answer whatever the database does
            log.warning("metrics_read_failed", collector=self.name, error=type(exc).__name__)
            return
        yield from families

    def families(self) -> list[Any]:
        """Fresh, empty metric families (a new list per scrape: scrapes may run in parallel)."""
        raise NotImplementedError

    def fill(self, conn: sa.Connection, families: list[Any]) -> None:
        """Reads the figures into `families`."""
        raise NotImplementedError


def seconds_since(when: datetime | str | None, now: datetime | None = None) -> float | None:
    """Seconds from `when` (a datetime, naive meaning UTC as SQLite returns it, or ISO text) to now."""
    if when is None:
        return None
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, ((now or datetime.now(UTC)) - when).total_seconds())


class OutboxCollector(DatabaseCollector):
    """The audit outbox of a producer: events not yet delivered to the audit service, the age of the
    oldest, and the relay's consecutive failed deliveries."""

    name = "audit_outbox"

    def __init__(self, engine: Callable[[], Engine | None], failures: Callable[[], int | None]) -> None:
        super().__init__(engine)
        self._failures = failures

    def families(self) -> list[Any]:
        return [
            GaugeMetricFamily(
                "cef_audit_outbox_pending", "Audit events recorded here and not yet delivered to audit."
            ),
            GaugeMetricFamily(
                "cef_audit_outbox_oldest_pending_seconds",
                "Age of the oldest undelivered audit event (0 when none is pending).",
            ),
            GaugeMetricFamily(
                "cef_audit_outbox_delivery_failures",
                "Consecutive failed deliveries of the outbox relay (0 once one succeeds).",
            ),
        ]

    def fill(self, conn: sa.Connection, families: list[Any]) -> None:
        pending, oldest = conn.execute(
            sa.text("SELECT count(*), min(created_at) FROM audit_outbox WHERE delivered_at IS NULL")
        ).one()
        families[0].add_metric([], float(pending))
        families[1].add_metric([], seconds_since(oldest) or 0.0)
        families[2].add_metric([], float(self._failures() or 0))
