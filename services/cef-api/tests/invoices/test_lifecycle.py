"""The invoice state machine after validation: approval with its ledger reference, payments
(idempotent by reference, never above what is unpaid), withdrawal, and a 409 naming the state for
every step the state does not allow, each transition an audit event."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api

from cef_api.invoices.lifecycle import INVOICE_TRANSITIONS, LINE_TRANSITIONS
from cef_api.invoices.models import InvoiceStatus, QueryState
from cef_api.invoices.schemas import InvoiceStatusName


def _events(api: Api, kind: str) -> list[dict[str, Any]]:
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [e for e in (json.loads(p) for (p,) in rows) if e["type"] == kind]


async def _submitted(
    api: Api, world: generate_world.World, index: int = 0
) -> tuple[dict, generate_world.Invoice]:
    inv = world.invoices[index]
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    return r.json(), inv


async def _decide_all(api: Api, invoice: dict, inv: generate_world.Invoice, *, accept: bool = True) -> None:
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"], sub="cef-officer")
    for line in (e for e in inv.expected if e.outcome == "query"):
        body = (
            {"decision": "accept", "amount": "10.00"}
            if accept
            else {"decision": "reject", "reason": "no referral"}
        )
        r = await api.client.post(
            f"/v1/invoices/{invoice['id']}/lines/{line.line_ref}/decision", json=body, headers=staff
        )
        assert r.status_code == 200, r.text


async def _approved(api: Api, world: generate_world.World) -> tuple[dict, generate_world.Invoice]:
    await api.load_world(world)
    invoice, inv = await _submitted(api, world)
    await _decide_all(api, invoice, inv)
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"])
    r = await api.client.post(f"/v1/invoices/{invoice['id']}/approve", headers=staff)
    assert r.status_code == 200, r.text
    return r.json(), inv


def test_the_state_tables_name_every_state() -> None:
    statuses = set(InvoiceStatusName.__args__)  # type: ignore[attr-defined]
    assert set(INVOICE_TRANSITIONS) == statuses == set(InvoiceStatus.ALL)
    assert all(set(targets) <= statuses for targets in INVOICE_TRANSITIONS.values())
    assert set(LINE_TRANSITIONS) == set(QueryState.ALL)
    # Terminal states go nowhere; every other state is reachable from `received`.
    reached, frontier = {InvoiceStatus.RECEIVED}, [InvoiceStatus.RECEIVED]
    while frontier:
        for target in INVOICE_TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == statuses


async def test_approval_sets_a_ledger_reference_and_records_the_transition(
    api: Api, world: generate_world.World
) -> None:
    approved, inv = await _approved(api, world)
    commissioner = inv.header["commissioner_code"]
    assert approved["ledger_reference"].startswith(f"CEF-{commissioner}-")
    event = _events(api, "invoice.approve")[-1]
    assert event["detail"]["from"] == "validated"
    assert event["detail"]["to"] == approved["status"]
    assert event["detail"]["ledger_reference"] == approved["ledger_reference"]
    # The validation's own transitions were recorded too.
    assert [e["detail"]["to"] for e in _events(api, "invoice.validate.start")] == ["validating"]
    assert _events(api, "invoice.validate")[-1]["detail"]["to"] == "validated"


async def test_payments_move_the_invoice_to_part_paid_then_paid(
    api: Api, world: generate_world.World
) -> None:
    approved, inv = await _approved(api, world)
    if approved["status"] == "rejected":
        pytest.skip("this draw of the world approved nothing")  # pragma: no cover
    commissioner = inv.header["commissioner_code"]
    finance = api.h("invoices:read", org=commissioner, sub="ledger-clerk")
    base = f"/v1/invoices/{approved['id']}"
    total = Decimal(approved["approved_amount"])
    first = (total / 3).quantize(Decimal("0.01"))
    today = date.today().isoformat()

    r = await api.client.post(
        f"{base}/payments",
        json={"amount": f"{first}", "reference": "BACS-1", "paid_on": today},
        headers=finance,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["invoice_status"] == "part-paid"
    assert Decimal(body["unpaid_amount"]) == total - first
    assert body["recorded_by"] == "ledger-clerk"

    # The same reference, amount and date again: nothing new, the first answer.
    again = await api.client.post(
        f"{base}/payments",
        json={"amount": f"{first}", "reference": "BACS-1", "paid_on": today},
        headers=finance,
    )
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["paid_amount"] == f"{first}"

    # The same reference with another amount is refused, naming what was recorded.
    r = await api.client.post(
        f"{base}/payments", json={"amount": "0.01", "reference": "BACS-1", "paid_on": today}, headers=finance
    )
    assert r.status_code == 409
    assert r.json()["code"] == "payment-reference-reused"

    # Never above what is approved and unpaid.
    over = total - first + Decimal("0.01")
    r = await api.client.post(
        f"{base}/payments",
        json={"amount": f"{over}", "reference": "BACS-2", "paid_on": today},
        headers=finance,
    )
    assert r.status_code == 422
    assert r.json()["code"] == "payment-exceeds-unpaid"
    assert r.json()["unpaid_amount"] == f"{total - first}"

    # Not in the future, not zero.
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    r = await api.client.post(
        f"{base}/payments",
        json={"amount": "0.01", "reference": "BACS-3", "paid_on": tomorrow},
        headers=finance,
    )
    assert r.status_code == 422
    r = await api.client.post(
        f"{base}/payments", json={"amount": "0.00", "reference": "BACS-3", "paid_on": today}, headers=finance
    )
    assert r.status_code == 422

    # The rest pays the invoice in full.
    r = await api.client.post(
        f"{base}/payments",
        json={"amount": f"{total - first}", "reference": "BACS-2", "paid_on": today},
        headers=finance,
    )
    assert r.status_code == 201, r.text
    assert r.json()["invoice_status"] == "paid"
    assert r.json()["unpaid_amount"] == "0.00"

    # A paid invoice takes no more payments: 409 naming its state.
    r = await api.client.post(
        f"{base}/payments", json={"amount": "0.01", "reference": "BACS-4", "paid_on": today}, headers=finance
    )
    assert r.status_code == 409
    assert r.json()["code"] == "invalid-transition"
    assert r.json()["state"] == "paid"
    assert "is paid" in r.json()["detail"]

    listed = (await api.client.get(f"{base}/payments", headers=finance)).json()["items"]
    assert [p["reference"] for p in listed] == ["BACS-1", "BACS-2"]
    assert sum(Decimal(p["amount"]) for p in listed) == total
    # A paid invoice is off the approved-to-pay list.
    pay = (await api.client.get("/v1/invoices/approved-to-pay", headers=finance)).json()
    assert pay["items"] == []
    events = _events(api, "invoice.payment")
    assert [(e["detail"]["from"], e["detail"]["to"]) for e in events] == [
        ("approved" if approved["status"] == "approved" else "part-approved", "part-paid"),
        ("part-paid", "paid"),
    ]


async def test_only_the_commissioners_finance_records_payments(api: Api, world: generate_world.World) -> None:
    approved, inv = await _approved(api, world)
    base = f"/v1/invoices/{approved['id']}/payments"
    body = {"amount": "0.01", "reference": "BACS-1", "paid_on": date.today().isoformat()}
    commissioner = inv.header["commissioner_code"]
    r = await api.client.post(base, json=body, headers=api.h("invoices:validate", org=commissioner))
    assert r.status_code == 403
    r = await api.client.post(base, json=body, headers=api.h("invoices:read", org="X24"))
    assert r.status_code == 404
    r = await api.client.post(
        base, json=body, headers=api.h("invoices:submit", org=inv.header["provider_code"])
    )
    assert r.status_code == 403
    r = await api.client.post(
        base, json={**body, "reference": "9434765919"}, headers=api.h("invoices:read", org=commissioner)
    )
    assert r.status_code == 422
    assert "9434765919" not in r.text


async def test_a_validated_invoice_takes_no_payment(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    invoice, inv = await _submitted(api, world)
    finance = api.h("invoices:read", org=inv.header["commissioner_code"])
    r = await api.client.post(
        f"/v1/invoices/{invoice['id']}/payments",
        json={"amount": "1.00", "reference": "BACS-1", "paid_on": date.today().isoformat()},
        headers=finance,
    )
    assert r.status_code == 409
    problem = r.json()
    assert problem["state"] == "validated"
    assert problem["allowed_from"] == ["approved", "part-approved", "part-paid"]


async def test_withdrawal_before_approval_only_by_the_provider(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    invoice, inv = await _submitted(api, world)
    provider, commissioner = inv.header["provider_code"], inv.header["commissioner_code"]
    base = f"/v1/invoices/{invoice['id']}"
    r = await api.client.post(
        f"{base}/withdraw", json={}, headers=api.h("invoices:validate", org=commissioner)
    )
    assert r.status_code == 403
    r = await api.client.post(
        f"{base}/withdraw",
        json={"reason": "patient born 01/02/1970"},
        headers=api.h("invoices:submit", org=provider),
    )
    assert r.status_code == 422
    assert r.json()["code"] == "message-contains-identifier"
    assert "1970" not in r.text
    r = await api.client.post(
        f"{base}/withdraw",
        json={"reason": "sent to the wrong commissioner"},
        headers=api.h("invoices:submit", org=provider),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "withdrawn"
    assert r.json()["withdraw_reason"] == "sent to the wrong commissioner"
    # Nothing more happens to it.
    staff = api.h("invoices:validate", org=commissioner)
    r = await api.client.post(f"{base}/approve", headers=staff)
    assert r.status_code == 409
    assert r.json()["state"] == "withdrawn"
    r = await api.client.post(f"{base}/withdraw", headers=api.h("invoices:submit", org=provider))
    assert r.status_code == 409
    assert r.json()["code"] == "invalid-transition"
    event = _events(api, "invoice.withdraw")[0]
    assert (event["detail"]["from"], event["detail"]["to"]) == ("validated", "withdrawn")
    assert "reason" not in event["detail"]


async def test_an_approved_invoice_cannot_be_withdrawn(api: Api, world: generate_world.World) -> None:
    approved, inv = await _approved(api, world)
    r = await api.client.post(
        f"/v1/invoices/{approved['id']}/withdraw",
        headers=api.h("invoices:submit", org=inv.header["provider_code"]),
    )
    assert r.status_code == 409
    assert r.json()["state"] == approved["status"]
    assert r.json()["allowed_from"] == ["validated"]


async def _outcomes(api: Api, invoice_id: str, org: str) -> list[tuple[str, str, list[str]]]:
    lines = await api.lines(invoice_id, "invoices:submit", org)
    return [(x["line_ref"], x["outcome"], x["reasons"]) for x in lines]


@pytest.mark.parametrize("withdraw_first", [True, False])
async def test_withdrawn_lines_stop_counting_as_earlier_lines(
    api: Api, world: generate_world.World, withdraw_first: bool
) -> None:
    await api.load_world(world)
    invoice, inv = await _submitted(api, world)
    provider = inv.header["provider_code"]
    first = await _outcomes(api, invoice["id"], provider)
    if withdraw_first:
        r = await api.client.post(
            f"/v1/invoices/{invoice['id']}/withdraw", headers=api.h("invoices:submit", org=provider)
        )
        assert r.status_code == 200
    again = dict(inv.header, invoice_number=inv.header["invoice_number"] + "-R")
    r = await api.submit(again, inv.backing)
    assert r.status_code == 201, r.text
    second = await _outcomes(api, r.json()["id"], provider)
    if withdraw_first:
        # Exactly the first answers: the withdrawn invoice is as if it had never been.
        assert second == first
    else:
        # The control: without the withdrawal the same activity is a duplicate of the first.
        counted = [ref for ref, outcome, _ in first if outcome != "rejected"]
        assert counted
        assert all("DUPLICATE_ACTIVITY" in reasons for ref, _, reasons in second if ref in counted)


def test_a_line_amount_shaped_like_an_nhs_number_is_withheld_from_views() -> None:
    from cef_api.invoices.schemas import line_money

    assert line_money(943476591900) is None  # £9434765919.00
    assert line_money(99952482630) == "999524826.30"  # nine digits of pounds: an amount
    assert line_money(12345) == "123.45"
    assert line_money(None) is None


async def test_typed_amounts_stop_below_ten_digits_of_pounds(api: Api, world: generate_world.World) -> None:
    approved, inv = await _approved(api, world)
    finance = api.h("invoices:read", org=inv.header["commissioner_code"])
    r = await api.client.post(
        f"/v1/invoices/{approved['id']}/payments",
        json={"amount": "9434765919", "reference": "BACS-9", "paid_on": date.today().isoformat()},
        headers=finance,
    )
    assert r.status_code == 422
    assert "9434765919" not in r.text
