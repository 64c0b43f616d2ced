"""An audit outage loses nothing and duplicates nothing: producers keep working while the audit
service is down, their events wait in the outbox, and all arrive, once each and in order, when it
returns. Over real sockets: the audit service on a real port, stopped and restarted on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI
from pydantic_settings import SettingsConfigDict

from cef_audit.config import Settings as AuditSettings
from cef_audit.main import MIGRATIONS as AUDIT_MIGRATIONS
from cef_audit.main import create_app as create_audit_app
from cef_common.app import ServiceSpec, create_service_app
from cef_common.audit import OutboxRelay, build_event, outbox_table_ddl, record_event
from cef_common.auth import Principal, require_scopes
from cef_common.db import SessionDep
from cef_common.settings import BaseServiceSettings, TrustedIssuer
from cef_common.testing import ServerThread, app_client, free_port

PRODUCER = "billing"


class ProducerSettings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_OUTAGETEST_", env_file=None, extra="ignore")
    service_name: str = PRODUCER


def producer_app(settings: ProducerSettings, audit_url: str) -> FastAPI:
    router = APIRouter()

    @router.post("/v1/work/{n}", status_code=201)
    def work(
        n: int, session: SessionDep, principal: Annotated[Principal, Depends(require_scopes("work"))]
    ) -> dict[str, int]:
        # The change and its audit event commit together, or neither does.
        session.execute(sa.text("INSERT INTO work (n) VALUES (:n)"), {"n": n})
        record_event(
            session,
            build_event(
                source=PRODUCER,
                action="create",
                type="work.do",
                outcome="success",
                principal=principal,
                entity_type="work",
                entity_id=str(n),
                detail={"n": n},
            ),
        )
        return {"n": n}

    return create_service_app(
        ServiceSpec(
            settings=settings,
            title="producer",
            description="test producer",
            migrations=Path(__file__).parent,
            routers=[router],
            audit_url=audit_url,
        )
    )


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.e2e
async def test_no_event_is_lost_or_duplicated_across_an_audit_outage(
    data_dir: Path, dev_issuer: Any, database_factory: Any
) -> None:
    producer_url = database_factory("sqlite", None)
    engine = sa.create_engine(producer_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE work (n INTEGER PRIMARY KEY)"))
        sa.Table("audit_outbox", sa.MetaData(), *outbox_table_ddl()).create(conn)
    engine.dispose()

    port = free_port()
    audit_url = f"http://127.0.0.1:{port}"
    producer_settings = ProducerSettings(
        data_dir=data_dir,
        database_url=producer_url,
        dev_issuer_enabled=True,
        environment="test",
        http_connect_timeout=0.5,
        http_read_timeout=5,
        # Quick retries, so the test does not wait out production backoff.
        audit_relay_poll_seconds=0.05,
        audit_relay_max_backoff_seconds=0.3,
    )
    producer = producer_app(producer_settings, audit_url)  # creates the producer's own signing key
    audit_settings = AuditSettings(
        data_dir=data_dir,
        database_url=database_factory("sqlite", AUDIT_MIGRATIONS),
        dev_issuer_enabled=True,
        environment="test",
        checkpoint_interval_seconds=0,
        trusted_issuers=[
            TrustedIssuer(
                issuer=PRODUCER,
                jwks_file=data_dir / "keys" / f"{PRODUCER}.jwks.json",
                allowed_scopes=["audit:write"],
            )
        ],
    )
    work_headers = dev_issuer.headers("work", sub="clerk-7", org="RX1", aud=PRODUCER)
    reader = dev_issuer.headers("audit:read", sub="auditor", aud="audit")

    async with app_client(producer) as client:
        relay: OutboxRelay = producer.state.outbox_relay

        async def do_work(numbers: range) -> None:
            for n in numbers:
                r = await client.post(f"/v1/work/{n}", headers=work_headers)
                assert r.status_code == 201, r.text

        with ServerThread(create_audit_app(audit_settings), port=port):
            await do_work(range(0, 5))
            relay.wake()
            _wait(lambda: relay.pending_count() == 0, "the first events to be delivered")

        # The audit service is down: the producer keeps working, its events wait in the outbox.
        await do_work(range(5, 30))
        relay.wake()
        _wait(lambda: relay.failures >= 2, "the relay to notice the outage")
        assert relay.pending_count() == 25

        with ServerThread(create_audit_app(audit_settings), port=port):
            relay.wake()
            _wait(lambda: relay.pending_count() == 0, "the outbox to drain after the outage")
            # A delivery whose answer was lost is sent again: the audit service stores it once.
            engine = sa.create_engine(producer_url)
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE audit_outbox SET delivered_at = NULL WHERE id > 20"))
            engine.dispose()
            relay.wake()
            _wait(lambda: relay.pending_count() == 0, "the redelivery")

            with httpx.Client(base_url=audit_url, headers=reader) as audit:
                items: list[dict[str, Any]] = []
                cursor = None
                while True:
                    params: dict[str, Any] = {"source": PRODUCER, "limit": 7}
                    if cursor:
                        params["cursor"] = cursor
                    page = audit.get("/v1/events", params=params).json()
                    items += page["items"]
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                verdict = audit.get("/v1/verify").json()

    assert [e["detail"]["n"] for e in items] == list(range(30))  # every event, once, in order
    assert len({e["event_id"] for e in items}) == 30
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(seqs)
    assert {e["recorded_by"]["sub"] for e in items} == {PRODUCER}
    assert {(e["actor"]["sub"], e["actor"]["org"]) for e in items} == {("clerk-7", "RX1")}
    assert verdict["valid"] is True, verdict
