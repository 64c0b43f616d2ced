"""Prometheus metrics: a registry per app on a listener of its own (never the public port), request
counts and latencies by route template, refusals by code, the outbox backlog at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from cef_common.app import ServiceSpec, create_service_app
from cef_common.audit import OutboxRelay, build_event, outbox_table_ddl, record_event
from cef_common.db import make_engine
from cef_common.metrics import MAX_CODES, OTHER, BoundedLabel, OutboxCollector, ServiceMetrics
from cef_common.refusals import RefusalAuditor
from cef_common.testing import DevIssuer, app_client, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[str, Samples]:
    """The listener's text and its samples, by (name, labels)."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    return value(samples, "cef_http_requests_total", method=method, route=route, status=status)


async def test_request_counters_move_and_name_route_templates(make_app: Any, dev_issuer: DevIssuer) -> None:
    port = free_port()
    reader = dev_issuer.headers("things:read", aud="common-test", org="QX7")
    async with app_client(make_app(metrics_port=port)) as client:
        _, before = scrape(port)
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/orgs/QX7/things", headers=reader)).status_code == 200
        assert (await client.get("/no/such/place/QX7-secret")).status_code == 404
        text, after = scrape(port)
    assert requests_of(after, "/healthz", "200") - requests_of(before, "/healthz", "200") == 3
    assert requests_of(after, "/v1/orgs/{org}/things", "200") == 1
    assert requests_of(after, "(no route)", "404") == 1
    latency = value(
        after, "cef_http_request_duration_seconds_count", method="GET", route="/v1/orgs/{org}/things"
    )
    assert latency == 1
    # Templates only: the caller's path segments never become a label.
    assert "QX7" not in text
    assert "secret" not in text


async def test_metrics_are_not_served_on_the_public_port(make_app: Any) -> None:
    port = free_port()
    async with app_client(make_app(metrics_port=port)) as client:
        public = await client.get("/metrics")
        elsewhere = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert (await client.get("/openapi.json")).json()["paths"].get("/metrics") is None
    assert public.status_code == 404
    # The metrics listener answers /metrics and nothing else.
    assert elsewhere.status_code == 404


async def test_the_listener_stops_with_the_service(make_app: Any) -> None:
    port = free_port()
    async with app_client(make_app(metrics_port=port)):
        scrape(port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


async def test_metrics_are_off_with_port_zero_and_in_tests_by_default(make_app: Any) -> None:
    app = make_app()
    assert app.state.settings.effective_metrics_port == 0
    async with app_client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert app.state.metrics._server is None


def test_default_ports_follow_the_service(settings_cls: Any, tmp_path: Any) -> None:
    ports = {
        name: settings_cls(data_dir=tmp_path, service_name=name).effective_metrics_port
        for name in ("web", "tokeniser", "cef-api", "audit")
    }
    assert ports == {"web": 9000, "tokeniser": 9001, "cef-api": 9002, "audit": 9003}
    assert settings_cls(data_dir=tmp_path, metrics_port=9100).effective_metrics_port == 9100
    assert settings_cls(data_dir=tmp_path, service_name="audit", metrics_port=0).effective_metrics_port == 0


async def test_two_apps_in_one_process_keep_their_own_counts(make_app: Any) -> None:
    first_port, second_port = free_port(), free_port()
    async with (
        app_client(make_app(metrics_port=first_port)) as first,
        app_client(make_app(metrics_port=second_port)) as second,
    ):
        await first.get("/healthz")
        await first.get("/healthz")
        await second.get("/healthz")
        _, a = scrape(first_port)
        _, b = scrape(second_port)
    assert requests_of(a, "/healthz", "200") == 2
    assert requests_of(b, "/healthz", "200") == 1


async def test_a_taken_port_is_survived_outside_production_only(make_app: Any) -> None:
    port = free_port()
    async with app_client(make_app(metrics_port=port)):
        # A second service asking for the same port still starts, without metrics.
        second = make_app(metrics_port=port)
        async with app_client(second) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert second.state.metrics._server is None
        with pytest.raises(RuntimeError, match="metrics listener could not bind"):
            ServiceMetrics("x").serve("127.0.0.1", port, required=True)


async def test_refusals_are_counted_by_code(make_app: Any, dev_issuer: DevIssuer) -> None:
    port = free_port()
    async with app_client(make_app(metrics_port=port)) as client:
        assert (await client.get("/v1/widgets")).status_code == 401
        wrong_scope = dev_issuer.headers("other", aud="common-test", sub="bob")
        for _ in range(2):
            assert (await client.get("/v1/widgets", headers=wrong_scope)).status_code == 403
        # A plain 404 is an answer, not a refusal: not counted.
        missing = await client.get(
            "/v1/missing", headers=dev_issuer.headers("things:read", aud="common-test")
        )
        assert missing.status_code == 404
        text, samples = scrape(port)
    assert value(samples, "cef_refusals_total", status="403", code="insufficient-scope") == 2
    assert "widget-not-found" not in text
    unauthorised = sum(
        v
        for (name, labels), v in samples.items()
        if name == "cef_refusals_total" and ("status", "401") in labels
    )
    assert unauthorised == 1
    assert "bob" not in text


def test_a_label_stays_bounded() -> None:
    label = BoundedLabel(limit=3)
    assert label("insufficient-scope") == "insufficient-scope"
    assert label("Has Spaces") == OTHER
    assert label('quote"d') == OTHER
    assert [label(f"code-{n}") for n in range(4)] == ["code-0", "code-1", OTHER, OTHER]
    assert label("insufficient-scope") == "insufficient-scope"  # one seen before stays itself
    assert BoundedLabel().limit == MAX_CODES


def test_the_refusal_auditor_counts_without_a_registry_too() -> None:
    # Services' own tests build auditors without metrics; counting is then a no-op.
    auditor = RefusalAuditor(source="x")
    assert auditor.refusals is None


@pytest.fixture
def outbox_engine(tmp_path: Any) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'producer.db'}")
    sa.Table("audit_outbox", sa.MetaData(), *outbox_table_ddl()).create(engine)
    yield engine
    engine.dispose()


def collect(collector: Any) -> dict[str, float]:
    return {s.name: s.value for family in collector.collect() for s in family.samples}


def test_outbox_backlog_is_read_at_scrape_time(outbox_engine: sa.Engine) -> None:
    delivered: list[bytes] = []

    def audit(request: httpx.Request) -> httpx.Response:
        delivered.append(request.content)
        events = [
            {"event_id": e["event_id"]} for e in httpx.Response(200, content=request.content).json()["events"]
        ]
        return httpx.Response(200, json={"results": events})

    relay = OutboxRelay(
        outbox_engine,
        lambda: httpx.Client(base_url="http://audit", transport=httpx.MockTransport(audit)),
    )
    collector = OutboxCollector(lambda: outbox_engine, lambda: relay.failures)
    assert collect(collector)["cef_audit_outbox_pending"] == 0
    with Session(outbox_engine) as session:
        for _ in range(3):
            record_event(
                session,
                build_event(
                    source="t", action="create", type="thing.made", outcome="success", principal=None
                ),
            )
        session.commit()
    with outbox_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_outbox SET created_at = :t"),
            {"t": datetime.now(UTC) - timedelta(minutes=5)},
        )
    waiting = collect(collector)
    assert waiting["cef_audit_outbox_pending"] == 3
    assert 290 < waiting["cef_audit_outbox_oldest_pending_seconds"] < 600
    assert waiting["cef_audit_outbox_delivery_failures"] == 0
    assert relay.drain() == 3
    done = collect(collector)
    assert done["cef_audit_outbox_pending"] == 0
    assert done["cef_audit_outbox_oldest_pending_seconds"] == 0
    assert len(delivered) == 1


def test_a_scrape_answers_while_the_database_is_away() -> None:
    gone = make_engine("sqlite:////nonexistent-directory/producer.db")
    assert collect(OutboxCollector(lambda: gone, lambda: 0)) == {}
    # Before the service has started (no engine yet), nothing is read.
    assert collect(OutboxCollector(lambda: None, lambda: None)) == {}


def test_producers_register_the_outbox_collector(
    make_app: Any, settings_cls: Any, data_dir: Any, migrations_dir: Any, outbox_engine: sa.Engine
) -> None:
    plain: FastAPI = make_app()
    names = {m.name for m in plain.state.metrics.registry.collect()}
    assert {"cef_http_requests", "cef_http_request_duration_seconds", "cef_refusals"} <= names
    # A service that records no audit events has no outbox to report.
    assert "cef_audit_outbox_pending" not in names
    producer = create_service_app(
        ServiceSpec(
            settings=settings_cls(data_dir=data_dir, environment="test"),
            title="producer",
            description="Records audit events.",
            migrations=migrations_dir,
            audit_url="http://127.0.0.1:9",
        )
    )
    # Read from the service's engine (made by the lifespan; given here).
    producer.state.engine = outbox_engine
    assert producer.state.metrics.registry.get_sample_value("cef_audit_outbox_pending") == 0
