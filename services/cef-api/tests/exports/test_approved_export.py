"""GET /v1/invoices/approved-to-pay with Accept: text/csv: every payable invoice of the caller's
commissioner (all pages), for finance and CEF staff (both databases)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import generate_world
import pytest
from api_support import Api
from exports_support import parse

from cef_api.invoices import exports

CSV = {"Accept": "text/csv"}
COLUMNS = [
    "provider_code",
    "invoice_number",
    "invoice_id",
    "period_start",
    "period_end",
    "status",
    "approved_amount",
    "paid_amount",
    "unpaid_amount",
    "ledger_reference",
]
URL = "/v1/invoices/approved-to-pay"


async def _approve(api: Api, inv: generate_world.Invoice) -> dict[str, Any]:
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    invoice = r.json()
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"])
    for line in (e for e in inv.expected if e.outcome == "query"):
        r = await api.client.post(
            f"/v1/invoices/{invoice['id']}/lines/{line.line_ref}/decision",
            json={"decision": "accept", "amount": "10.00"},
            headers=staff,
        )
        assert r.status_code == 200, r.text
    r = await api.client.post(f"/v1/invoices/{invoice['id']}/approve", headers=staff)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _pay(api: Api, invoice: dict[str, Any], amount: Decimal, reference: str) -> None:
    finance = api.h("invoices:read", org=invoice["commissioner_code"])
    r = await api.client.post(
        f"/v1/invoices/{invoice['id']}/payments",
        json={"amount": f"{amount}", "reference": reference, "paid_on": date.today().isoformat()},
        headers=finance,
    )
    assert r.status_code == 201, r.text


@pytest.fixture
async def payable(api: Api, world: generate_world.World) -> tuple[Api, list[dict[str, Any]], str]:
    """Four approved invoices of one commissioner: one paid in part, one paid in full, and an
    invoice number that would be a formula."""
    await api.load_world(world)
    approved = []
    for n, inv in enumerate(world.invoices):
        if n == 3:
            inv.header["invoice_number"] = "=1+2"
        approved.append(await _approve(api, inv))
    assert {a["status"] for a in approved} <= {"approved", "part-approved"}
    await _pay(api, approved[0], Decimal("1.00"), "BACS-PART")
    await _pay(api, approved[1], Decimal(approved[1]["approved_amount"]), "BACS-FULL")
    return api, approved, world.invoices[0].header["commissioner_code"]


async def _json_items(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get(URL, params=params, headers=headers)).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def test_finance_gets_every_payable_invoice_across_pages(
    payable: tuple[Api, list[dict[str, Any]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, approved, commissioner = payable
    monkeypatch.setattr(exports, "PAGE_INVOICES", 1)
    finance = api.h("invoices:read", org=commissioner)
    r = await api.client.get(URL, params={"limit": 1}, headers={**finance, **CSV})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="approved-to-pay-{commissioner}-')
    columns, rows = parse(r.content)
    assert columns == COLUMNS
    items = await _json_items(api, finance)
    # Every page (the limit is for JSON), the paid invoice left out, the part-paid one kept.
    assert len(rows) == len(items) == 3
    assert approved[1]["id"] not in {row["invoice_id"] for row in rows}
    for row, item in zip(rows, items, strict=True):
        assert row["invoice_id"] == item["id"]
        for column in COLUMNS:
            if column == "invoice_id":
                continue
            value = item[column]
            text = "" if value is None else str(value)
            assert row[column] == ("'" + text if text.startswith("=") else text), column
    part = next(row for row in rows if row["invoice_id"] == approved[0]["id"])
    assert part["status"] == "part-paid"
    assert part["paid_amount"] == "1.00"
    assert Decimal(part["unpaid_amount"]) == Decimal(part["approved_amount"]) - 1
    assert part["ledger_reference"] == approved[0]["ledger_reference"]
    formula = next(row for row in rows if row["invoice_id"] == approved[3]["id"])
    assert formula["invoice_number"] == "'=1+2"

    # CEF staff of the commissioner get the same file.
    staff = api.h("invoices:validate", org=commissioner)
    r = await api.client.get(URL, headers={**staff, **CSV})
    assert parse(r.content)[1] == rows


async def test_the_approved_export_is_refused_as_the_list_is(sqlite_api: Api) -> None:
    api = sqlite_api
    assert (await api.client.get(URL, headers=CSV)).status_code == 401
    r = await api.client.get(URL, headers={**api.h("invoices:submit", org="RTR"), **CSV})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.client.get(URL, headers={**api.h("invoices:read", org=None), **CSV})
    assert r.status_code == 403
    assert r.json()["code"] == "no-organisation"
    # A commissioner with nothing to pay gets the header row alone.
    r = await api.client.get(URL, headers={**api.h("invoices:read", org="X24"), **CSV})
    assert r.status_code == 200
    assert parse(r.content) == (COLUMNS, [])
