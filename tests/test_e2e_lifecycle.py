"""One invoice through its whole lifecycle over real processes, every step by a `cef` command as each
role would type it: the provider submits, CEF staff challenge a query line, the provider answers,
staff decide (one line, and in bulk by reason) and approve, finance pays in two parts, and the
auditor reads the invoice's history. Every transition, and a refusal, is found in the audit log."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

CEF = ["-m", "cef_cli.main"]
INVOICE = "demo/invoices/RTR-201904-0000"


def _cef(up: Any, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *CEF, *args, "--data-dir", str(up.data_dir)],
        capture_output=True,
        text=True,
        env={**up.env, "COLUMNS": "80"},
        timeout=180,
    )
    if ok:
        assert done.returncode == 0, f"cef {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


def _get(up: Any, service: str, path: str, token: str, **params: Any) -> Any:
    r = httpx.get(f"{up.url(service)}{path}", params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def _history(up: Any, invoice_id: str) -> list[dict[str, Any]]:
    token = up.token("audit:read", "audit")
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = _get(up, "audit", f"/v1/entities/invoice/{invoice_id}/events", token, **params)
        events += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return events


def _wait_for(up: Any, invoice_id: str, wanted: set[str]) -> list[dict[str, Any]]:
    """The events reach the audit service through each producer's outbox: wait until they have (the
    last one to arrive is the final payment's, which moves the invoice to paid)."""
    deadline = time.monotonic() + 60
    while True:
        events = _history(up, invoice_id)
        arrived = wanted <= {e["type"] for e in events}
        if (
            arrived and any(e.get("detail", {}).get("to") == "paid" for e in events)
        ) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_one_invoice_walks_the_whole_lifecycle_by_cli(up: Any, repo_root: Path) -> None:
    # The provider submits the demo invoice.
    _cef(up, "submit", str(repo_root / f"{INVOICE}.json"), str(repo_root / f"{INVOICE}.csv"))
    provider_token = up.token("invoices:submit", "cef-api", org="RTR")
    (invoice,) = _get(up, "cef-api", "/v1/invoices", provider_token)["items"]
    invoice_id = invoice["id"]
    listed = _cef(up, "invoices", "list", "--org", "RTR")
    assert invoice["invoice_number"] in listed.stdout

    # CEF staff see its query lines in their queue and challenge one.
    staff_token = up.token("invoices:validate", "cef-api", org="00C")
    queue = _get(up, "cef-api", "/v1/queries", staff_token, invoice_id=invoice_id)["items"]
    assert queue
    assert {q["state"] for q in queue} == {"query"}
    shown = _cef(up, "queries", "list", "--org", "00C")
    for q in queue:
        assert q["line_ref"] in shown.stdout
    by_reason = {reason: q for q in queue for reason in q["reasons"]}
    challenged = by_reason.get("DOB_MISMATCH", queue[0])
    # A message holding an NHS number is refused, and nothing is stored.
    refused = _cef(
        up,
        "queries",
        "challenge",
        invoice_id,
        challenged["line_ref"],
        "--org",
        "00C",
        "--message",
        "Is this patient 943 476 5919?",
        ok=False,
    )
    assert refused.returncode != 0
    assert "476 5919" not in refused.stdout + refused.stderr

    _cef(
        up,
        "queries",
        "challenge",
        invoice_id,
        challenged["line_ref"],
        "--org",
        "00C",
        "--message",
        "The date of birth differs from the trace; please check the patient's record.",
    )
    # The provider sees the challenge and answers it with a corrected amount.
    (challenge,) = _get(up, "cef-api", "/v1/challenges", provider_token, status="open")["items"]
    assert challenge["line_ref"] == challenged["line_ref"]
    assert challenged["line_ref"] in _cef(up, "challenges", "list", "--org", "RTR").stdout
    corrected = Decimal(challenged["claimed_amount"]) - Decimal("1.00")
    _cef(
        up,
        "challenges",
        "respond",
        challenge["id"],
        "--org",
        "RTR",
        "--message",
        "Our record was out of date; the corrected amount is attached.",
        "--corrected-amount",
        f"{corrected:.2f}",
    )

    # Staff accept the answered line at the corrected amount, reject the rest: one line by hand and
    # every line of a reason in bulk.
    _cef(
        up,
        "queries",
        "decide",
        invoice_id,
        challenged["line_ref"],
        "--accept",
        "--amount",
        f"{corrected:.2f}",
        "--org",
        "00C",
    )
    rest = [q for q in queue if q["line_ref"] != challenged["line_ref"]]
    assert rest
    bulk_reason = rest[0]["reasons"][0]
    _cef(
        up,
        "queries",
        "decide",
        invoice_id,
        "--reason-code",
        bulk_reason,
        "--reject",
        "--reason",
        "No tariff agreed for this activity.",
        "--org",
        "00C",
    )
    for q in _get(up, "cef-api", "/v1/queries", staff_token, invoice_id=invoice_id)["items"]:
        _cef(
            up,
            "queries",
            "decide",
            invoice_id,
            q["line_ref"],
            "--reject",
            "--reason",
            "Patient not traced at the time of activity.",
            "--org",
            "00C",
        )
    # Approval as the provider's organisation: that invoice is not its to approve (404, audited).
    assert _cef(up, "invoices", "approve", invoice_id, "--org", "RTR", ok=False).returncode != 0
    _cef(up, "invoices", "approve", invoice_id, "--org", "00C")
    approved = _get(up, "cef-api", f"/v1/invoices/{invoice_id}", staff_token)
    assert approved["status"] == "part-approved"
    total = Decimal(approved["approved_amount"])
    expected = Decimal(invoice["summary"]["validated_amount"]) + corrected
    assert total == expected

    # Finance pays it in two parts.
    assert approved["ledger_reference"] in _cef(up, "finance", "approved", "--org", "00C").stdout
    first = (total / 2).quantize(Decimal("0.01"))
    _cef(
        up,
        "finance",
        "pay",
        invoice_id,
        "--amount",
        f"{first}",
        "--reference",
        "BACS-E2E-1",
        "--paid-on",
        "2019-06-28",
        "--org",
        "00C",
    )
    assert _get(up, "cef-api", f"/v1/invoices/{invoice_id}", staff_token)["status"] == "part-paid"
    too_much = _cef(
        up,
        "finance",
        "pay",
        invoice_id,
        "--amount",
        f"{total}",
        "--reference",
        "BACS-E2E-2",
        "--paid-on",
        "2019-06-30",
        "--org",
        "00C",
        ok=False,
    )
    assert too_much.returncode != 0
    _cef(
        up,
        "finance",
        "pay",
        invoice_id,
        "--amount",
        f"{total - first}",
        "--reference",
        "BACS-E2E-2",
        "--paid-on",
        "2019-06-30",
        "--org",
        "00C",
    )
    paid = _get(up, "cef-api", f"/v1/invoices/{invoice_id}", staff_token)
    assert (paid["status"], paid["paid_amount"]) == ("paid", f"{total}")

    # The auditor reads the invoice's whole history: every transition, in order.
    wanted = {
        "invoice.submit",
        "invoice.validate.start",
        "invoice.validate",
        "invoice.line.challenge",
        "invoice.line.challenge.response",
        "invoice.line.decision",
        "invoice.lines.bulk_decision",
        "invoice.approve",
        "invoice.payment",
    }
    events = _wait_for(up, invoice_id, wanted)
    assert wanted <= {e["type"] for e in events}
    moves = [
        (e["detail"]["from"], e["detail"]["to"])
        for e in events
        if e["entity"]["type"] == "invoice" and "from" in e.get("detail", {})
    ]
    assert moves == [
        ("received", "validating"),
        ("validating", "validated"),
        ("validated", "part-approved"),
        ("part-approved", "part-paid"),
        ("part-paid", "paid"),
    ]
    history = _cef(up, "audit", "history", "invoice", invoice_id, "--all")
    assert "invoice.payment" in history.stdout
    assert all(len(line) <= 80 for line in history.stdout.splitlines())

    # The refusals are in the log too: the approval as the provider, the message holding an NHS number.
    token = up.token("audit:read", "audit")
    deadline = time.monotonic() + 60
    while True:
        denied = _get(up, "audit", "/v1/events", token, outcome="denied", limit=500)["items"]
        routes = {(e["detail"].get("route"), e["detail"].get("code")) for e in denied}
        if (
            ("/v1/invoices/{invoice_id}/approve", "not-found") in routes
            and any(code == "message-contains-identifier" for _, code in routes)
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ("/v1/invoices/{invoice_id}/approve", "not-found") in routes
    assert any(code == "message-contains-identifier" for _, code in routes)
    assert "9434765919" not in str(denied)
    assert "943 476 5919" not in str(denied)
