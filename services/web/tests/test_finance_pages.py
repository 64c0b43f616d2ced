"""The finance pages: invoices approved to pay (their commissioner's only), recording a payment,
refusals kept in the form, the CSV for the ledger, and nothing line-level or identifying shown."""

from __future__ import annotations

import csv
import html
import re
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import DEMO, Stack, csrf_of, post_form, sign_in

from cef_web.pages import finance

INVOICE = "RTR-201904-0000"
COMMISSIONER = "00C"


def approve_demo(stack: Stack, name: str) -> dict[str, Any]:
    """Submits a demo invoice, decides each query line as CEF staff of its commissioner (accept at
    the claimed amount, reject when there is none) and approves it: the approved invoice."""
    invoice = stack.submit_demo(name)
    staff = stack.api_headers("invoices:validate", org=invoice["commissioner_code"])
    path = f"/v1/invoices/{invoice['id']}"
    with stack.api() as api:
        lines = api.get(f"{path}/lines", params={"outcome": "query"}, headers=staff)
        assert lines.status_code == 200, lines.text
        for line in lines.json()["items"]:
            body = (
                {"decision": "accept", "amount": line["claimed_amount"]}
                if line["claimed_amount"]
                else {"decision": "reject", "reason": "nothing is claimed on this line"}
            )
            decided = api.post(f"{path}/lines/{line['line_ref']}/decision", json=body, headers=staff)
            assert decided.status_code == 200, decided.text
        approved = api.post(f"{path}/approve", headers=staff)
    assert approved.status_code == 200, approved.text
    body: dict[str, Any] = approved.json()
    assert body["status"] in ("approved", "part-approved")
    return body


@pytest.fixture(scope="module")
def approved(stack: Stack) -> dict[str, Any]:
    return approve_demo(stack, INVOICE)


def api_invoice(stack: Stack, invoice_id: str) -> dict[str, Any]:
    with stack.api() as api:
        r = api.get(
            f"/v1/invoices/{invoice_id}", headers=stack.api_headers("invoices:read", org=COMMISSIONER)
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def unpaid_of(invoice: dict[str, Any]) -> Decimal:
    return Decimal(invoice["approved_amount"]) - Decimal(invoice["paid_amount"])


def field_value(page: str, field_id: str) -> str | None:
    """The value a form's input shows (None without one), as the browser would fill it in."""
    found = re.search(rf'<input[^>]*\bid="{re.escape(field_id)}"[^>]*>', page)
    assert found, f"no input {field_id}"
    value = re.search(r'\bvalue="([^"]*)"', found.group(0))
    return html.unescape(value.group(1)) if value else ""


def shown_pounds(amount: Decimal) -> str:
    """An amount as the pages show it: £72,208.99."""
    return f"£{amount:,.2f}"


def test_finance_sees_the_approved_invoices_of_its_own_commissioner_only(
    web: TestClient, approved: dict[str, Any], stack: Stack
) -> None:
    sign_in(web, "finance", COMMISSIONER)
    page = web.get("/finance/approved")
    assert page.status_code == 200
    assert INVOICE in page.text
    assert f'href="/finance/invoices/{approved["id"]}"' in page.text
    assert shown_pounds(Decimal(approved["approved_amount"])) in page.text
    assert approved["ledger_reference"] in page.text

    with stack.web() as other:
        sign_in(other, "finance", "00L")
        theirs = other.get("/finance/approved")
        assert theirs.status_code == 200
        assert INVOICE not in theirs.text
        assert "Nothing approved is waiting to be paid" in theirs.text
        # Nor can they open it: the API refuses another commissioner's invoice.
        assert other.get(f"/finance/invoices/{approved['id']}").status_code in (403, 404)


def test_the_approved_list_pages_with_the_api_cursors(
    web: TestClient, approved: dict[str, Any], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    approve_demo(stack, "RXP-201905-0002")
    monkeypatch.setattr(finance, "PAGE_SIZE", 1)
    sign_in(web, "finance", COMMISSIONER)
    seen: list[str] = []
    href: str | None = "/finance/approved"
    while href:
        page = web.get(html.unescape(href))
        assert page.status_code == 200
        numbers = re.findall(r'<a href="/finance/invoices/[0-9a-f-]+">([^<]+)</a>', page.text)
        assert len(numbers) == 1
        seen += numbers
        if len(seen) > 1:
            assert 'href="/finance/approved">' in page.text.split('class="nhsuk-pagination', 1)[1]
        found = re.search(
            r'class="nhsuk-pagination__link nhsuk-pagination__link--next" href="([^"]+)"', page.text
        )
        href = found.group(1) if found else None
    assert {INVOICE, "RXP-201905-0002"} <= set(seen)
    assert len(seen) == len(set(seen))


def test_a_refused_cursor_starts_the_list_again(web: TestClient, approved: dict[str, Any]) -> None:
    sign_in(web, "finance", COMMISSIONER)
    for path in ("/finance/approved", "/finance/paid"):
        r = web.get(path, params={"cursor": "not-a-cursor"})
        assert r.status_code == 303
        assert r.headers["location"] == path


def test_recording_a_payment_updates_paid_and_outstanding(
    web: TestClient, approved: dict[str, Any], stack: Stack
) -> None:
    before = api_invoice(stack, approved["id"])
    sign_in(web, "finance", COMMISSIONER)
    page_path = f"/finance/invoices/{approved['id']}"
    r = post_form(
        web,
        page_path,
        f"{page_path}/payments",
        {
            "amount": "1,000.5",
            "reference": "BACS-TEST-0001",
            "paid_on[day]": "30",
            "paid_on[month]": "6",
            "paid_on[year]": "2019",
        },
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == page_path
    after = api_invoice(stack, approved["id"])
    assert Decimal(after["paid_amount"]) == Decimal(before["paid_amount"]) + Decimal("1000.50")
    assert after["status"] == "part-paid"

    shown = web.get(page_path)
    assert "Payment of £1,000.50 recorded" in shown.text
    assert "BACS-TEST-0001" in shown.text
    assert shown_pounds(unpaid_of(after)) in shown.text
    with stack.api() as api:
        payments = api.get(
            f"/v1/invoices/{approved['id']}/payments",
            headers=stack.api_headers("invoices:read", org=COMMISSIONER),
        ).json()["items"]
    assert any(p["reference"] == "BACS-TEST-0001" and p["amount"] == "1000.50" for p in payments)
    # The list shows what is still outstanding.
    assert shown_pounds(unpaid_of(after)) in web.get("/finance/approved").text


def test_an_over_payment_is_refused_by_the_api_and_the_typed_values_are_kept(
    web: TestClient, approved: dict[str, Any], stack: Stack
) -> None:
    before = api_invoice(stack, approved["id"])
    too_much = unpaid_of(before) + Decimal("0.01")
    sign_in(web, "finance", COMMISSIONER)
    page_path = f"/finance/invoices/{approved['id']}"
    r = post_form(
        web,
        page_path,
        f"{page_path}/payments",
        {
            "amount": f"{too_much}",
            "reference": "BACS-TOO-MUCH",
            "paid_on[day]": "1",
            "paid_on[month]": "7",
            "paid_on[year]": "2019",
        },
    )
    assert r.status_code == 422
    assert "<title>Error: " in r.text
    assert "nhsuk-error-summary" in r.text
    assert 'href="#amount"' in r.text
    # The API's own words: at most what is unpaid.
    assert f"record at most £{unpaid_of(before):.2f}" in r.text
    assert field_value(r.text, "amount") == f"{too_much}"
    assert field_value(r.text, "reference") == "BACS-TOO-MUCH"
    assert field_value(r.text, "paid_on-month") == "7"
    assert api_invoice(stack, approved["id"])["paid_amount"] == before["paid_amount"]


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("12.345", "at most 2 decimal places"),
        ("ten pounds", "at most 2 decimal places"),
        ("0.00", "more than £0.00"),
        ("-5", "at most 2 decimal places"),
        ("", "Enter the amount paid"),
    ],
)
def test_a_malformed_amount_is_refused_with_the_error_summary(
    web: TestClient, approved: dict[str, Any], stack: Stack, amount: str, message: str
) -> None:
    before = api_invoice(stack, approved["id"])
    sign_in(web, "finance", COMMISSIONER)
    page_path = f"/finance/invoices/{approved['id']}"
    r = post_form(
        web,
        page_path,
        f"{page_path}/payments",
        {
            "amount": amount,
            "reference": "BACS-MALFORMED",
            "paid_on[day]": "31",
            "paid_on[month]": "2",
            "paid_on[year]": "2019",
        },
    )
    assert r.status_code == 422
    summary = r.text.split('class="nhsuk-error-summary', 1)[1].split("</div>", 1)[0]
    assert message in summary
    assert 'href="#amount"' in summary
    # 31 February is not a date: said as well, on its own field.
    assert 'href="#paid_on-day"' in summary
    assert field_value(r.text, "amount") == amount
    assert field_value(r.text, "reference") == "BACS-MALFORMED"
    assert field_value(r.text, "paid_on-day") == "31"
    assert api_invoice(stack, approved["id"])["paid_amount"] == before["paid_amount"]


def test_the_csv_export_streams_as_text_csv_with_a_filename(
    web: TestClient, approved: dict[str, Any]
) -> None:
    sign_in(web, "finance", COMMISSIONER)
    r = web.get("/finance/approved.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert re.search(r'attachment; filename="?[^"]+\.csv"?', r.headers["content-disposition"])
    rows = list(csv.DictReader(r.text.splitlines()))
    assert any(row["invoice_id"] == approved["id"] and row["invoice_number"] == INVOICE for row in rows)


def test_the_paid_list_shows_invoices_paid_in_full(web: TestClient, stack: Stack) -> None:
    paid = approve_demo(stack, "RVW-201905-0001")
    with stack.api() as api:
        r = api.post(
            f"/v1/invoices/{paid['id']}/payments",
            json={"amount": paid["approved_amount"], "reference": "BACS-IN-FULL", "paid_on": "2019-07-01"},
            headers=stack.api_headers("invoices:read", org=COMMISSIONER),
        )
    assert r.status_code == 201, r.text
    sign_in(web, "finance", COMMISSIONER)
    listed = web.get("/finance/paid")
    assert listed.status_code == 200
    assert "RVW-201905-0001" in listed.text
    assert "RVW-201905-0001" not in web.get("/finance/approved").text
    page = web.get(f"/finance/invoices/{paid['id']}")
    assert "This invoice is paid in full" in page.text
    assert 'action="/finance/invoices/' not in page.text


def test_finance_pages_show_no_nhs_number_and_no_line_ref(web: TestClient, approved: dict[str, Any]) -> None:
    with (DEMO / "reference" / "patients.csv").open(newline="") as f:
        nhs_numbers = {row["nhs_number"] for row in csv.DictReader(f)}
    with (DEMO / "expected" / "line_outcomes.csv").open(newline="") as f:
        line_refs = {row["line_ref"] for row in csv.DictReader(f) if row["invoice_number"] == INVOICE}
    assert nhs_numbers
    assert line_refs
    sign_in(web, "finance", COMMISSIONER)
    pages = [
        web.get("/finance/approved"),
        web.get("/finance/paid"),
        web.get(f"/finance/invoices/{approved['id']}"),
        web.get("/finance/approved.csv"),
    ]
    for page in pages:
        assert page.status_code == 200
        for nhs_number in nhs_numbers:
            assert nhs_number not in page.text
        for ref in line_refs:
            # A line ref alone (the ledger reference holds digits runs of its own).
            assert not re.search(rf"(?<![0-9]){ref}(?![0-9])", page.text), ref


@pytest.mark.parametrize(
    ("role", "org"), [("provider", "RTR"), ("staff", COMMISSIONER), ("board", COMMISSIONER)]
)
def test_other_roles_get_403_on_the_finance_pages(
    web: TestClient, approved: dict[str, Any], stack: Stack, role: str, org: str
) -> None:
    before = api_invoice(stack, approved["id"])
    sign_in(web, role, org)
    paths = (
        "/finance/approved",
        "/finance/paid",
        "/finance/approved.csv",
        f"/finance/invoices/{approved['id']}",
    )
    for path in paths:
        assert web.get(path).status_code == 403, path
    # A payment posted by them, with their session's own CSRF token (every signed-in page carries it
    # in the sign-out form), is refused too and records nothing.
    refused = web.get("/finance/approved")
    r = web.post(
        f"/finance/invoices/{approved['id']}/payments",
        data={
            "csrf_token": csrf_of(refused),
            "amount": "1.00",
            "reference": "BACS-NOT-FINANCE",
            "paid_on[day]": "1",
            "paid_on[month]": "7",
            "paid_on[year]": "2019",
        },
    )
    assert r.status_code == 403
    assert api_invoice(stack, approved["id"])["paid_amount"] == before["paid_amount"]
