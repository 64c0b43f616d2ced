"""Bulk decisions: every undecided query line of an invoice carrying a reason, decided at once,
all or nothing, with one audit event; and approval afterwards."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from workflow_support import COMMISSIONER, Desk

from cef_api.validation.rules.outcome import QUERYING


def _d(amount: str | None) -> Decimal:
    return Decimal(amount or "0")


async def _lines(desk: Desk, index: int = 0) -> dict[str, dict[str, Any]]:
    lines = await desk.api.lines(desk.id(index), "invoices:validate", COMMISSIONER)
    return {x["line_ref"]: x for x in lines}


async def test_accepting_at_the_expected_amount_decides_every_undecided_line_with_the_reason(
    desk: Desk,
) -> None:
    before = await _lines(desk)
    price = [x for x in before.values() if x["outcome"] == "query" and "PRICE_MISMATCH" in x["reasons"]]
    decided_first, challenged, answered = (x["line_ref"] for x in price[:3])
    assert (await desk.decide(decided_first, {"decision": "accept", "amount": "1.00"})).status_code == 200
    open_id = (await desk.challenge(challenged)).json()["id"]
    answered_id = (await desk.challenge(answered)).json()["id"]
    assert (await desk.respond(answered_id, corrected_amount="10.00")).status_code == 200

    r = await desk.bulk({"reason_code": "PRICE_MISMATCH", "decision": "accept", "amount": "expected"})
    assert r.status_code == 200, r.text
    out = r.json()
    chosen = [x for x in price if x["line_ref"] != decided_first]
    total = sum(_d(x["expected_amount"]) for x in chosen)
    assert out == {
        "invoice_id": desk.id(0),
        "reason_code": "PRICE_MISMATCH",
        "decision": "accept",
        "amount": "expected",
        "lines": len(chosen),
        "amount_total": f"{total:.2f}",
    }
    after = await _lines(desk)
    for x in chosen:
        line = after[x["line_ref"]]
        assert (line["decision"], line["decided_amount"]) == ("accept", x["expected_amount"])
        assert line["decided_by"] == "cef-officer"
    assert after[decided_first]["decided_amount"] == "1.00"  # decided before: untouched
    others = [x for x in after.values() if x["outcome"] == "query" and "PRICE_MISMATCH" not in x["reasons"]]
    assert all(x["decision"] is None for x in others)
    for challenge_id in (open_id, answered_id):
        r = await desk.client.get(f"/v1/challenges/{challenge_id}", headers=desk.staff())
        assert (r.json()["status"], r.json()["line"]["state"]) == ("closed", "accepted")

    (event,) = desk.events("invoice.lines.bulk_decision")
    assert event["entity"] == {"type": "invoice", "id": desk.id(0), "count": len(chosen)}
    assert event["detail"] == {
        "reason_code": "PRICE_MISMATCH",
        "decision": "accept",
        "amount_basis": "expected",
        "amount_total": f"{total:.2f}",
        "to": "accepted",
        "challenges_closed": 2,
    }
    assert len(desk.events("invoice.line.decision")) == 1  # only the single decision before

    # Nothing undecided carries the reason any more: an honest 0, not an error.
    r = await desk.bulk({"reason_code": "PRICE_MISMATCH", "decision": "reject", "reason": "late claim"})
    assert (r.status_code, r.json()["lines"], r.json()["amount_total"]) == (200, 0, "0.00")
    assert desk.events("invoice.lines.bulk_decision")[-1]["entity"]["count"] == 0


async def test_a_line_without_the_amount_asked_for_refuses_the_whole_request(desk: Desk) -> None:
    lines = await _lines(desk)
    tariff = [x for x in lines.values() if x["outcome"] == "query" and "TARIFF_NOT_FOUND" in x["reasons"]]
    assert tariff
    assert all(x["expected_amount"] is None for x in tariff)
    r = await desk.bulk({"reason_code": "TARIFF_NOT_FOUND", "decision": "accept", "amount": "expected"})
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "amount-missing"
    assert (problem["lines"], problem["without_amount"]) == (len(tariff), len(tariff))
    assert f"{len(tariff)} of the {len(tariff)}" in problem["detail"]
    assert await _lines(desk) == lines
    assert desk.events("invoice.lines.bulk_decision") == []

    r = await desk.bulk({"reason_code": "TARIFF_NOT_FOUND", "decision": "accept"})
    assert r.status_code == 200
    assert r.json()["amount"] == "claimed"
    assert r.json()["amount_total"] == f"{sum(_d(x['claimed_amount']) for x in tariff):.2f}"


async def test_bodies_that_are_not_a_decision_are_refused(desk: Desk) -> None:
    bad = [
        {"reason_code": "PATIENT_NOT_FOUND", "decision": "reject"},  # no reason
        {"reason_code": "PATIENT_NOT_FOUND", "decision": "reject", "reason": "x", "amount": "claimed"},
        {"reason_code": "NHS_NUMBER_INVALID", "decision": "accept"},  # never on a query line
        {"reason_code": "PATIENT_NOT_FOUND", "decision": "accept", "amount": "12.00"},
        {"reason_code": "PATIENT_NOT_FOUND", "decision": "maybe"},
        {"reason_code": "PATIENT_NOT_FOUND", "decision": "accept", "note": "x"},
    ]
    for body in bad:
        r = await desk.bulk(body)
        assert r.status_code == 422, body
    assert desk.events("invoice.lines.bulk_decision") == []


async def test_who_may_decide_in_bulk_and_when(desk: Desk) -> None:
    body = {"reason_code": "DOB_MISMATCH", "decision": "accept"}
    url = f"/v1/invoices/{desk.id(0)}/queries/decision"
    r = await desk.client.post(url, json=body, headers=desk.staff(org="00K"))
    assert r.status_code == 404
    r = await desk.client.post(url, json=body, headers=desk.provider(0))
    assert r.status_code == 403
    r = await desk.client.post(url, json=body, headers=desk.api.h("invoices:read", org=COMMISSIONER))
    assert r.status_code == 403
    r = await desk.client.post(f"/v1/invoices/{desk.id(1)}/withdraw", json={}, headers=desk.provider(1))
    assert r.status_code == 200
    r = await desk.bulk(body, 1)
    assert (r.status_code, r.json()["code"]) == (409, "invoice-not-ready")


async def test_approval_after_bulk_decisions_pays_what_was_decided(desk: Desk) -> None:
    lines = await _lines(desk, 2)
    queries = [x for x in lines.values() if x["outcome"] == "query"]
    r = await desk.client.post(f"/v1/invoices/{desk.id(2)}/approve", headers=desk.staff())
    assert (r.status_code, r.json()["pending"]) == (409, len(queries))
    paid = sum((_d(x["claimed_amount"]) for x in lines.values() if x["outcome"] == "valid"), Decimal(0))
    decided = 0
    done: set[str] = set()
    for code in sorted(r.value for r in QUERYING):
        # A line with two query reasons is decided by the first bulk decision that names one.
        having = [x for x in queries if code in x["reasons"] and x["line_ref"] not in done]
        done.update(x["line_ref"] for x in having)
        if code == "PRICE_MISMATCH":
            body: dict[str, Any] = {"reason_code": code, "decision": "accept", "amount": "expected"}
            paid += sum(_d(x["expected_amount"]) for x in having)
        elif code == "TARIFF_NOT_FOUND":
            body = {"reason_code": code, "decision": "accept"}
            paid += sum(_d(x["claimed_amount"]) for x in having)
        else:
            body = {"reason_code": code, "decision": "reject", "reason": "the patient is not ours to pay for"}
        r = await desk.bulk(body, 2)
        assert r.status_code == 200, r.text
        assert r.json()["lines"] == len(having)
        decided += r.json()["lines"]
    assert decided == len(queries)
    r = await desk.client.post(f"/v1/invoices/{desk.id(2)}/approve", headers=desk.staff())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "part-approved"
    assert r.json()["approved_amount"] == f"{paid:.2f}"
    r = await desk.bulk({"reason_code": "PRICE_MISMATCH", "decision": "accept"}, 2)
    assert (r.status_code, r.json()["code"]) == (409, "invoice-not-ready")
    assert len(desk.events("invoice.lines.bulk_decision")) == len(QUERYING)
