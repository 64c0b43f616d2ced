"""What a failure leaves behind: nothing when the tokeniser is away during a submission, no line
that counts for duplicates when an invoice failed, and never an invoice left open when the
database could not take the failure at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, api_settings, running_api

from cef_api.invoices import jobs
from cef_api.tokeniser_client import TokeniserClient
from cef_common.http import make_client
from cef_common.testing import free_port


def _count(api: Api, table: str) -> int:
    with api.app.state.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


async def test_tokeniser_unreachable_during_a_submission_stores_nothing(
    sqlite_api: Api, world: generate_world.World
) -> None:
    api = sqlite_api
    await api.load_world(world)
    inv = world.invoices[0]
    working = api.app.state.tokeniser
    api.app.state.tokeniser = TokeniserClient(
        make_client(f"http://127.0.0.1:{free_port()}", retries=0), batch_size=1000
    )
    r = await api.submit(inv.header, inv.backing, headers={"Idempotency-Key": "t-1"})
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "tokeniser-unavailable"
    assert "nothing of this invoice was stored" in r.json()["detail"]
    assert _count(api, "invoice") == 0
    assert _count(api, "invoice_line") == 0
    with api.app.state.engine.connect() as conn:
        payloads = [
            json.loads(p) for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        ]
    events = [(e["type"], e["action"], e["outcome"]) for e in payloads if e["type"].startswith("invoice.")]
    assert events == [
        ("invoice.submit", "create", "success"),
        ("invoice.validate.start", "execute", "success"),
        ("invoice.validate", "execute", "failure"),
        ("invoice.submit", "delete", "failure"),
    ]
    assert len({e["entity"]["id"] for e in payloads if e["type"].startswith("invoice.")}) == 1

    api.app.state.tokeniser = working
    retry = await api.submit(inv.header, inv.backing, headers={"Idempotency-Key": "t-1"})
    assert retry.status_code == 201, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert retry.json()["summary"]["valid"] == int(generate_world.summary_of(inv)["valid"])


@pytest.mark.parametrize("memory_rows", [1_000_000, 0], ids=["earlier-keys-in-memory", "per-batch"])
async def test_lines_of_a_failed_invoice_never_count_as_earlier_lines(
    data_dir: Path,
    sqlite_api_db: str,
    tokeniser: Any,
    dev_issuer: Any,
    world: generate_world.World,
    memory_rows: int,
) -> None:
    """Even lines a failed invoice somehow kept (failing deletes them) are not earlier activity:
    the same file under a new number then has the outcomes of the first, not duplicates."""
    settings = api_settings(data_dir, sqlite_api_db, tokeniser.url, reference_memory_rows=memory_rows)
    inv = world.invoices[0]
    org = inv.header["provider_code"]
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        first = await api.submit(inv.header, inv.backing)
        assert first.status_code == 201, first.text
        with api.app.state.engine.begin() as conn:
            conn.execute(sa.text("UPDATE invoice SET status = 'failed'"))
            kept = conn.execute(
                sa.text("SELECT count(*) FROM invoice_line WHERE dup_key IS NOT NULL")
            ).scalar_one()
        assert kept > 0  # the failed invoice's countable lines are still there
        again = await api.submit({**inv.header, "invoice_number": "AGAIN-1"}, inv.backing)
        assert again.status_code == 201, again.text
        got = await api.lines(again.json()["id"], "invoices:submit", org)
    assert [(x["line_ref"], x["outcome"], x["reasons"]) for x in got] == [
        (e.line_ref, e.outcome, sorted(e.reasons)) for e in inv.expected
    ]


def test_a_failure_the_database_cannot_take_at_once_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    done = threading.Event()

    def flaky(engine: Any, seq: int, reason: str) -> None:
        calls.append(seq)
        if len(calls) < 3:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("the database is restarting"))
        done.set()

    monkeypatch.setattr(jobs, "fail_invoice", flaky)
    jobs.fail_invoice_or_retry(object(), 42, "stopped", within=30)  # type: ignore[arg-type]
    assert calls == [42]  # the first attempt failed; the rest happen in the background
    assert done.wait(30), calls
    assert calls == [42, 42, 42]


async def test_a_failure_noticed_after_validation_committed_never_undoes_it(
    sqlite_api: Api, world: generate_world.World
) -> None:
    # E.g. reading the invoice back failed while the database restarted: the validated invoice,
    # its lines and any decisions on them stand.
    api = sqlite_api
    await api.load_world(world)
    inv = world.invoices[0]
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    lines = _count(api, "invoice_line")
    with api.app.state.engine.connect() as conn:
        seq = conn.execute(
            sa.text("SELECT seq FROM invoice WHERE id = :id"), {"id": r.json()["id"]}
        ).scalar_one()
    jobs.fail_invoice(api.app.state.engine, seq, "the database went away")
    after = await api.client.get(
        f"/v1/invoices/{r.json()['id']}", headers=api.h("invoices:submit", org=inv.header["provider_code"])
    )
    assert after.json()["status"] == "validated"
    assert _count(api, "invoice_line") == lines
