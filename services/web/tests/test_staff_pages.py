"""The CEF staff pages: the query queue, an invoice's query lines and the forms that resolve them,
and re-identifying one line's patient; checked against the API and the audit log behind them.

The three demo invoices are submitted once for the module; each test works on its own lines (RVW's
lines for challenging and deciding, RTR for approval, RXP only read), so no test needs another's
order."""

from __future__ import annotations

import csv
import re
import time
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import DEMO, Stack, csrf_of, post_form, sign_in

from cef_web.pages.staff import _plan
from cef_web.templating import pounds

ORDER = (DEMO / "invoices" / "ORDER").read_text().split()
STAFF_SUB = "00C-staff"


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


OUTCOMES = _rows(str(DEMO / "expected" / "line_outcomes.csv"))
PATIENT_NUMBERS = {row["nhs_number"] for row in _rows(str(DEMO / "reference" / "patients.csv"))}


def query_lines(name: str) -> dict[str, list[str]]:
    """The demo invoice's query lines, as demo/expected has them: line_ref → reasons."""
    return {
        row["line_ref"]: row["reasons"].split(";")
        for row in OUTCOMES
        if row["invoice_number"] == name and row["outcome"] == "query"
    }


def backing_line(name: str, line_ref: str) -> dict[str, str]:
    """One line of a demo invoice's backing data, as the provider sent it."""
    for row in _rows(str(DEMO / "invoices" / f"{name}.csv")):
        if row["line_ref"].strip() == line_ref:
            return row
    raise AssertionError(f"{name} has no line {line_ref}")


def assert_no_nhs_number(text: str) -> None:
    shown = {number for number in PATIENT_NUMBERS if number in text}
    assert not shown, "a staff page shows an NHS number of the reference file"


@pytest.fixture(scope="module")
def demo(stack: Stack) -> dict[str, dict[str, Any]]:
    """The demo invoices, submitted in their order (checks 14 and 15 look back at earlier ones)."""
    submitted = {name: stack.submit_demo(name) for name in ORDER}
    for name, invoice in submitted.items():
        assert invoice["status"] == "validated", name
    return submitted


@pytest.fixture
def staff(web: TestClient) -> TestClient:
    """The test's browser, signed in as CEF staff of 00C."""
    sign_in(web, "staff", "00C")
    return web


def api_query_lines(stack: Stack, invoice_id: str) -> dict[str, dict[str, Any]]:
    """The invoice's query lines as the API tells CEF staff: line_ref → line (state, decision)."""
    with stack.api() as api:
        r = api.get(
            f"/v1/invoices/{invoice_id}/lines",
            params={"outcome": "query"},
            headers=stack.api_headers("invoices:validate", org="00C"),
        )
    assert r.status_code == 200, r.text
    return {line["line_ref"]: line for line in r.json()["items"]}


def shown_line_refs(page: str) -> set[str]:
    """The line refs of the rows of the lines table (each row's re-identify form carries its ref)."""
    return set(re.findall(r'name="line_ref" value="([^"]+)">\s*<button', page))


def test_the_queue_lists_an_invoice_with_query_lines_for_its_commissioner_only(
    web: TestClient, stack: Stack, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RXP-201905-0002"
    invoice = demo[name]
    sign_in(web, "staff", "00C")
    r = web.get("/staff/queue")
    assert r.status_code == 200
    row = next((tr for tr in r.text.split("<tr") if f'href="/staff/invoices/{invoice["id"]}"' in tr), None)
    assert row is not None, "the queue does not link to the invoice's query lines"
    assert name in row
    # Nothing of RXP's is decided by any test: all its query lines wait, claimed as the provider sent them.
    queried = query_lines(name)
    claimed = sum(Decimal(backing_line(name, ref)["amount"]) for ref in queried)
    cells = re.findall(r'<td class="nhsuk-table__cell cef-figure">\s*([^<]*?)\s*<', row)
    assert cells[0] == str(len(queried))
    assert pounds(int(claimed * 100)) in cells
    assert_no_nhs_number(r.text)
    # Oldest first: the demo's first invoice is listed before its last one (unless approved by now).
    assert r.text.index(demo["RVW-201905-0001"]["id"]) < r.text.index(invoice["id"])

    with stack.web() as elsewhere:
        sign_in(elsewhere, "staff", "00D")
        other = elsewhere.get("/staff/queue")
        assert other.status_code == 200
        assert name not in other.text
        assert invoice["id"] not in other.text
        assert elsewhere.get(f"/staff/invoices/{invoice['id']}").status_code == 404


def test_the_invoice_page_shows_only_its_query_lines_and_filters_by_reason(
    staff: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RXP-201905-0002"
    path = f"/staff/invoices/{demo[name]['id']}"
    r = staff.get(path)
    assert r.status_code == 200
    queried = query_lines(name)
    assert shown_line_refs(r.text) == set(queried)
    assert f"<title>Query lines of invoice {name}" in r.text
    # Each reason is explained, in the catalogue's words.
    assert "CROSS_BORDER_RESIDENT" in r.text
    assert "Wales" in r.text or "Scotland" in r.text or "border" in r.text.lower()
    assert_no_nhs_number(r.text)

    (ref,) = [ref for ref, reasons in queried.items() if "CROSS_BORDER_RESIDENT" in reasons]
    filtered = staff.get(path, params={"reason": "CROSS_BORDER_RESIDENT"})
    assert filtered.status_code == 200
    assert shown_line_refs(filtered.text) == {ref}
    assert 'value="CROSS_BORDER_RESIDENT" selected' in filtered.text


def test_challenging_a_line_through_the_page_reaches_the_provider(
    staff: TestClient, stack: Stack, demo: dict[str, dict[str, Any]]
) -> None:
    invoice = demo["RVW-201905-0001"]
    path = f"/staff/invoices/{invoice['id']}"
    refused = post_form(staff, path, f"{path}/challenge", {"line_ref": "00001", "message": "Why?"})
    assert refused.status_code == 422
    assert "There is a problem" in refused.text
    assert "at least 10 characters" in refused.text
    assert ">Why?</textarea>" in refused.text

    message = "The claimed amount is above the tariff for this HRG: please explain the price."
    r = post_form(staff, path, f"{path}/challenge", {"line_ref": "00001", "message": message})
    assert r.status_code == 303
    assert r.headers["location"] == path
    after = staff.get(path)
    assert "Line 00001 challenged" in after.text
    assert "00001" not in r.headers["location"]

    with stack.api() as api:
        seen = api.get(
            "/v1/challenges",
            params={"invoice_id": invoice["id"]},
            headers=stack.api_headers("invoices:submit", org="RVW"),
        )
    assert seen.status_code == 200
    (raised,) = [c for c in seen.json()["items"] if c["line_ref"] == "00001"]
    assert raised["message"] == message
    assert raised["status"] == "open"
    assert api_query_lines(stack, invoice["id"])["00001"]["state"] == "challenged"


def test_deciding_one_line_and_several_changes_their_state(
    staff: TestClient, stack: Stack, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RVW-201905-0001"
    invoice = demo[name]
    path = f"/staff/invoices/{invoice['id']}"

    refused = post_form(staff, path, f"{path}/decide", {"line_ref": "00018", "decision": "accept"})
    assert refused.status_code == 422
    assert "Enter the amount to pay" in refused.text
    refused = post_form(staff, path, f"{path}/decide", {"line_ref": "00018", "decision": "reject"})
    assert refused.status_code == 422
    assert "Select the reason for rejecting" in refused.text
    assert api_query_lines(stack, invoice["id"])["00018"]["state"] == "query"

    r = post_form(
        staff,
        path,
        f"{path}/decide",
        {
            "line_ref": "00018",
            "decision": "reject",
            "reason_code": "DOB_MISMATCH",
            "note": "the provider confirmed the line is for another patient",
        },
    )
    assert r.status_code == 303, r.text
    assert "Line 00018 rejected" in staff.get(r.headers["location"]).text
    line = api_query_lines(stack, invoice["id"])["00018"]
    assert (line["state"], line["decision"]) == ("rejected", "reject")
    assert line["decision_reason"].startswith("DOB_MISMATCH")

    # Every PATIENT_NOT_FOUND line (one bulk decision of the API) and one more (decided alone).
    not_found = [ref for ref, reasons in query_lines(name).items() if "PATIENT_NOT_FOUND" in reasons]
    (attendance,) = [
        ref for ref, reasons in query_lines(name).items() if "ATTENDANCE_DURING_SPELL" in reasons
    ]
    checked = [*not_found, attendance]
    refused = post_form(staff, path, f"{path}/decide-bulk", {"line_ref": checked})
    assert refused.status_code == 422
    assert "Select the decision for the selected lines" in refused.text
    assert all(f'value="{ref}" form="decide-bulk-form" checked' in refused.text for ref in checked)

    r = post_form(staff, path, f"{path}/decide-bulk", {"line_ref": checked, "decision": "accept-claimed"})
    assert r.status_code == 303, r.text
    assert f"{len(checked)} line(s) accepted" in staff.get(r.headers["location"]).text
    lines = api_query_lines(stack, invoice["id"])
    for ref in checked:
        assert lines[ref]["state"] == "accepted", ref
        assert Decimal(lines[ref]["decided_amount"]) == Decimal(backing_line(name, ref)["amount"])
    # A line that was not checked is left as it was.
    (price,) = [
        ref for ref, reasons in query_lines(name).items() if "PRICE_MISMATCH" in reasons and ref != "00001"
    ]
    assert lines[price]["state"] == "query"


def test_approval_is_refused_while_lines_are_in_query_and_succeeds_once_all_are_decided(
    staff: TestClient, stack: Stack, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RTR-201904-0000"
    invoice = demo[name]
    path = f"/staff/invoices/{invoice['id']}"
    refused = post_form(staff, path, f"{path}/approve", {})
    assert refused.status_code == 422
    assert "There is a problem" in refused.text
    assert "have no decision yet" in refused.text

    queried = list(query_lines(name))
    r = post_form(
        staff,
        path,
        f"{path}/decide-bulk",
        {"line_ref": queried, "decision": "reject", "reason_code": "NOT_RESPONSIBLE_COMMISSIONER"},
    )
    assert r.status_code == 303, r.text
    assert all(line["state"] == "rejected" for line in api_query_lines(stack, invoice["id"]).values())

    r = post_form(staff, path, f"{path}/approve", {})
    assert r.status_code == 303, r.text
    page = staff.get(r.headers["location"])
    assert f"Invoice {name} approved" in page.text
    with stack.api() as api:
        got = api.get(
            f"/v1/invoices/{invoice['id']}", headers=stack.api_headers("invoices:validate", org="00C")
        )
    assert got.json()["status"] in ("approved", "part-approved")
    assert_no_nhs_number(page.text)


def reidentification_events(stack: Stack, line_ref: str) -> list[dict[str, Any]]:
    """The audit service's re-identifications by the staff member, of `line_ref`, once a successful
    one is among them: the CEF API hands its events over shortly after, so this waits a little."""
    deadline = time.monotonic() + 15
    with stack.api() as client:
        while True:
            r = client.get(
                f"{stack.audit_url}/v1/reidentifications",
                params={"person": STAFF_SUB, "limit": 100, "order": "desc"},
                headers=stack.audit_headers(),
            )
            assert r.status_code == 200, r.text
            found = [e for e in r.json()["items"] if (e.get("detail") or {}).get("line_ref") == line_ref]
            if any(e["outcome"] == "success" for e in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def test_reidentification_needs_a_purpose_then_shows_the_patient_once(
    staff: TestClient, stack: Stack, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RXP-201905-0002"
    invoice = demo[name]
    (ref,) = [ref for ref, reasons in query_lines(name).items() if "CROSS_BORDER_RESIDENT" in reasons]
    expected = re.sub(r"\D", "", backing_line(name, ref)["nhs_number"])
    path = f"/staff/invoices/{invoice['id']}"

    asking = post_form(staff, path, f"{path}/reidentify", {"line_ref": ref})
    assert asking.status_code == 200
    assert "What you need the patient&#39;s identity for" in asking.text
    assert_no_nhs_number(asking.text)
    confirm = f"{path}/reidentify/confirm"

    empty = staff.post(
        confirm, data={"csrf_token": csrf_of(asking), "line_ref": ref, "purpose": "resolve-query"}
    )
    assert empty.status_code == 422
    assert "There is a problem" in empty.text
    assert "Enter what you need the patient" in empty.text
    assert_no_nhs_number(empty.text)

    holding = staff.post(
        confirm,
        data={
            "csrf_token": csrf_of(asking),
            "line_ref": ref,
            "purpose": "resolve-query",
            "reason": f"checking the residence of patient {expected} for this line",
        },
    )
    assert holding.status_code == 422
    assert "NHS number" in holding.text
    assert_no_nhs_number(holding.text)

    reason = "the provider disputes where the patient lived on the activity date"
    shown = staff.post(
        confirm,
        data={"csrf_token": csrf_of(asking), "line_ref": ref, "purpose": "resolve-query", "reason": reason},
    )
    assert shown.status_code == 200, shown.text
    assert expected in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert "this viewing is recorded" in shown.text.lower()
    title = re.search(r"<title>(.*?)</title>", shown.text, re.S)
    assert title is not None
    assert expected not in title.group(1)

    events = reidentification_events(stack, ref)
    success = [e for e in events if e["outcome"] == "success"]
    assert success, "no re-identification event in the audit log"
    assert success[0]["purpose"] == "resolve-query"
    assert success[0]["detail"]["reason"] == reason
    assert success[0]["detail"]["invoice_id"] == invoice["id"]
    assert expected not in str(events)


def test_the_reidentification_paths_cannot_be_reached_by_get(
    staff: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    path = f"/staff/invoices/{demo['RXP-201905-0002']['id']}"
    for address in (f"{path}/reidentify", f"{path}/reidentify/confirm"):
        r = staff.get(address)
        assert r.status_code in (404, 405)
        assert "Patient details" not in r.text
        assert_no_nhs_number(r.text)


def test_a_provider_cannot_use_the_staff_pages(web: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    sign_in(web, "provider", "RXP")
    assert web.get("/staff/queue").status_code == 403
    invoice_path = f"/staff/invoices/{demo['RXP-201905-0002']['id']}"
    assert web.get(invoice_path).status_code == 403
    # Its form's token (the page's sign-out form has one): the refusal is the role's, not the form's.
    csrf = csrf_of(web.get("/staff/queue"))
    r = web.post(f"{invoice_path}/reidentify", data={"csrf_token": csrf, "line_ref": "00004"})
    assert r.status_code == 403


def test_no_staff_page_but_the_reidentification_shows_an_nhs_number(
    staff: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    pages = [staff.get("/staff/queue")]
    for invoice in demo.values():
        path = f"/staff/invoices/{invoice['id']}"
        pages.append(staff.get(path))
        for state in ("query", "challenged", "accepted", "rejected"):
            pages.append(staff.get(path, params={"state": state}))
    name = "RXP-201905-0002"
    invoice_path = f"/staff/invoices/{demo[name]['id']}"
    (ref,) = [ref for ref, reasons in query_lines(name).items() if "PRIOR_APPROVAL_MISSING" in reasons]
    number = re.sub(r"\D", "", backing_line(name, ref)["nhs_number"])
    # The API refuses a challenge naming the patient; the page says why and does not show it back.
    refused = post_form(
        staff,
        invoice_path,
        f"{invoice_path}/challenge",
        {"line_ref": ref, "message": f"is this patient {number} the right one for the line?"},
    )
    assert refused.status_code == 422
    assert "Your question must not contain an NHS number" in refused.text
    pages.append(refused)
    for page in pages:
        assert page.status_code in (200, 422)
        assert_no_nhs_number(page.text)


def test_checked_lines_are_decided_by_reason_only_when_every_line_with_the_reason_is_checked() -> None:
    undecided = [
        {"line_ref": "01", "reasons": ["PATIENT_NOT_FOUND"]},
        {"line_ref": "02", "reasons": ["PATIENT_NOT_FOUND", "RESIDENCE_UNKNOWN"]},
        {"line_ref": "03", "reasons": ["PRICE_MISMATCH"]},
        {"line_ref": "04", "reasons": ["PRICE_MISMATCH"]},
        {"line_ref": "05", "reasons": ["DOB_MISMATCH"]},
    ]
    # Every PATIENT_NOT_FOUND line is checked: one bulk decision; one of two PRICE_MISMATCH lines
    # is not, so the other is decided alone, as is the only DOB_MISMATCH line.
    assert _plan(["05", "02", "01", "03"], undecided) == (["PATIENT_NOT_FOUND"], ["03", "05"])
    assert _plan(["01"], undecided) == ([], ["01"])
    assert _plan(["01", "02", "03", "04"], undecided) == (["PATIENT_NOT_FOUND", "PRICE_MISMATCH"], [])
