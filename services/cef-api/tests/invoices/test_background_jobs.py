"""Large submissions (202 + background worker), restart recovery, and duplicate detection that
stays exact when one provider submits many invoices at once."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import api_settings, running_api


@pytest.mark.parametrize("processes", [0, 2], ids=["in-process", "worker-processes"])
async def test_large_file_returns_202_and_validates_in_the_background(
    data_dir: Path,
    sqlite_api_db: str,
    tokeniser: Any,
    dev_issuer: Any,
    world: generate_world.World,
    processes: int,
) -> None:
    settings = api_settings(
        data_dir,
        sqlite_api_db,
        tokeniser.url,
        async_threshold_bytes=10,
        validation_batch_lines=7,
        validation_processes=processes,
    )
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        inv = world.invoices[0]
        r = await api.submit(inv.header, inv.backing)
        assert r.status_code == 202, r.text
        assert r.headers["Location"] == f"/v1/invoices/{r.json()['id']}"
        assert r.json()["status"] in ("received", "validating", "validated")
        headers = api.h("invoices:submit", org=inv.header["provider_code"])
        seen_progress = set()
        for _ in range(2400):  # up to 2 minutes on a busy machine
            body = (await api.client.get(r.headers["Location"], headers=headers)).json()
            seen_progress.add(body["lines_done"])
            if body["status"] == "validated":
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "validated"
        assert body["lines_done"] == len(inv.expected)
        assert body["summary"]["valid"] == int(generate_world.summary_of(inv)["valid"])
        lines = await api.lines(body["id"], "invoices:submit", inv.header["provider_code"])
        assert [(x["line_ref"], x["outcome"]) for x in lines] == [
            (e.line_ref, e.outcome) for e in inv.expected
        ]
    assert not list((data_dir / "spool").glob("*"))


async def test_restart_fails_interrupted_validations_cleanly(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any
) -> None:
    engine = sa.create_engine(sqlite_api_db)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for seq, status in ((1, "validating"), (2, "received")):
            conn.execute(
                sa.text(
                    "INSERT INTO invoice (seq, id, invoice_number, provider_code, commissioner_code,"
                    " invoice_date, period_start, period_end, status, submitted_at, submitted_by,"
                    " request_hash, backing_bytes, background, lines_done, lines, valid, query, rejected,"
                    " claimed_pennies, validated_pennies, reference_versions)"
                    " VALUES (:seq, :id, :n, 'RTR', '00K', '2019-05-05', '2019-04-01',"
                    " '2019-04-30', :status, :now, 'x', 'h', 10, 1, 5, 0, 0, 0, 0, 0, 0, '{}')"
                ),
                {"seq": seq, "id": str(uuid.uuid4()), "n": f"N-{seq}", "status": status, "now": now},
            )
        conn.execute(
            sa.text(
                "INSERT INTO invoice_line (invoice_seq, line_no, line_ref, outcome, reasons, nhs_token)"
                " VALUES (1, 1, '1', 'valid', '', 'tok')"
            )
        )
    (data_dir / "spool").mkdir()
    (data_dir / "spool" / "backing-stale.spool").write_bytes(b"ciphertext")
    async with running_api(api_settings(data_dir, sqlite_api_db, tokeniser.url), dev_issuer):
        pass
    with engine.connect() as conn:
        rows = list(conn.execute(sa.text("SELECT status, failure_reason FROM invoice ORDER BY seq")))
        lines = conn.execute(sa.text("SELECT count(*) FROM invoice_line")).scalar_one()
        events = [json.loads(p) for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox"))]
    engine.dispose()
    assert [r.status for r in rows] == ["failed", "failed"]
    assert all("submit the invoice again" in r.failure_reason for r in rows)
    assert lines == 0
    assert [e["outcome"] for e in events if e["type"] == "invoice.validate"] == ["failure", "failure"]
    assert not list((data_dir / "spool").glob("*"))


@pytest.mark.parametrize("db_kind", ["postgresql"])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"async_threshold_bytes": 10, "validation_batch_lines": 5, "validation_processes": 2}],
    ids=["as-submitted", "background-worker-processes"],
)
async def test_concurrent_submissions_of_one_provider_count_duplicates_once(
    data_dir: Path,
    api_db: str,
    tokeniser: Any,
    dev_issuer: Any,
    world: generate_world.World,
    overrides: dict[str, Any],
) -> None:
    """Five invoices with the same activity submitted at once: exactly one may count it."""
    settings = api_settings(data_dir, api_db, tokeniser.url, **overrides)
    inv = world.invoices[0]
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        headers = [{**inv.header, "invoice_number": f"{inv.header['invoice_number']}-{n}"} for n in range(5)]
        responses = await asyncio.gather(*(api.submit(h, inv.backing) for h in headers))
        assert all(r.status_code in (201, 202) for r in responses), [r.text for r in responses]
        org = inv.header["provider_code"]
        results = []
        for r in responses:
            body = r.json()
            while body["status"] != "validated":
                await asyncio.sleep(0.05)
                body = (
                    await api.client.get(
                        f"/v1/invoices/{body['id']}", headers=api.h("invoices:submit", org=org)
                    )
                ).json()
            results.append(await api.lines(body["id"], "invoices:submit", org))
    countable = [e.line_ref for e in inv.expected if e.outcome != "rejected"]
    assert countable
    firsts = [
        res
        for res in results
        if not any("DUPLICATE_ACTIVITY" in x["reasons"] for x in res if x["line_ref"] in countable)
    ]
    assert len(firsts) == 1
    for res in results:
        if res is firsts[0]:
            continue
        by_ref = {x["line_ref"]: x for x in res}
        assert all("DUPLICATE_ACTIVITY" in by_ref[ref]["reasons"] for ref in countable)
        assert all(by_ref[ref]["outcome"] == "rejected" for ref in countable)
