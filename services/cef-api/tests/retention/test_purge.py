"""Retention: line-level tokens of closed invoices go, outcomes and summaries stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import generate_world
import sqlalchemy as sa
from api_support import Api

from cef_api.invoices.service import purge


async def _approve_all(api: Api, invoice: dict, inv: generate_world.Invoice) -> None:
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"])
    for e in inv.expected:
        if e.outcome == "query":
            r = await api.client.post(
                f"/v1/invoices/{invoice['id']}/lines/{e.line_ref}/decision",
                json={"decision": "reject", "reason": "not evidenced"},
                headers=staff,
            )
            assert r.status_code == 200
    assert (await api.client.post(f"/v1/invoices/{invoice['id']}/approve", headers=staff)).status_code == 200


async def test_purge_removes_tokens_of_closed_invoices_only(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    closed, open_ = world.invoices[0], world.invoices[1]
    first = (await api.submit(closed.header, closed.backing)).json()
    second = (await api.submit(open_.header, open_.backing)).json()
    await _approve_all(api, first, closed)
    engine = api.app.state.engine

    assert purge(engine, older_than_days=30, principal=None)["invoices"] == 0
    result = purge(engine, older_than_days=30, principal=None, now=datetime.now(UTC) + timedelta(days=31))
    assert result["invoices"] == 1
    assert result["lines"] == len(closed.expected)
    with engine.connect() as conn:
        tokens = dict(
            conn.execute(
                sa.text(
                    "SELECT i.invoice_number, count(l.nhs_token) FROM invoice i JOIN invoice_line l"
                    " ON l.invoice_seq = i.seq GROUP BY i.invoice_number"
                )
            ).all()
        )
        dup_keys = conn.execute(
            sa.text(
                "SELECT count(dup_key) FROM invoice_line l JOIN invoice i ON l.invoice_seq = i.seq"
                " WHERE i.id = :id"
            ),
            {"id": first["id"]},
        ).scalar_one()
        outbox = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        events = [json.loads(p) for (p,) in outbox]
    assert tokens[closed.header["invoice_number"]] == 0
    assert dup_keys == 0
    assert tokens[open_.header["invoice_number"]] > 0
    purge_events = [e for e in events if e["type"] == "invoice.purge"]
    assert [e["entity"]["count"] for e in purge_events] == [0, 1]

    # Outcomes and the summary stay readable for the provider.
    lines = await api.lines(first["id"], "invoices:submit", closed.header["provider_code"])
    assert [(x["line_ref"], x["outcome"]) for x in lines] == [
        (e.line_ref, e.outcome) for e in closed.expected
    ]
    staff_view = await api.lines(first["id"], "invoices:validate", closed.header["commissioner_code"])
    assert all(x["patient_token"] is None for x in staff_view)
    assert second["status"] == "validated"
