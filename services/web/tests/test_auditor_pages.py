"""The auditor pages over the real audit service: searching the log, an invoice's history,
re-identifications, verifying the chain, exporting, and what they refuse."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from web_support import DEMO, Stack, csrf_of, post_form, sign_in

from cef_web.api import ServiceClient

NHS_NUMBERS = [
    row["nhs_number"] for row in csv.DictReader(io.StringIO((DEMO / "reference/patients.csv").read_text()))
]
ROW = re.compile(r"<tr class=\"nhsuk-table__row\">(.*?)</tr>", re.S)


def _audit_events(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    with httpx.Client(base_url=stack.audit_url, timeout=30) as audit:
        r = audit.get("/v1/events", params={"limit": 1000, **params}, headers=stack.audit_headers())
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _wait_for(what: str, found: Callable[[], bool], timeout: float = 30.0) -> None:
    """The producers' outbox relays deliver events a moment after the request: wait for them."""
    deadline = time.monotonic() + timeout
    while not found():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def _submitted(stack: Stack) -> dict[str, Any]:
    """Submits the demo invoice of RTR and waits until the audit log holds its submission and
    validation."""
    invoice = stack.submit_demo("RTR-201904-0000")
    _wait_for(
        "the invoice's events",
        lambda: (
            {"invoice.submit", "invoice.validate"}
            <= {e["type"] for e in _audit_events(stack, entity=invoice["id"])}
        ),
    )
    return invoice


@pytest.fixture(scope="module")
def invoice(stack: Stack) -> dict[str, Any]:
    return _submitted(stack)


def _event_rows(html: str) -> list[str]:
    """The body rows of the page's events table."""
    table = html.split('class="nhsuk-table cef-auditor-events"', 1)[1]
    return ROW.findall(table.split("<tbody", 1)[1].split("</tbody>", 1)[0])


def _no_nhs_number(html: str) -> None:
    found = [n for n in NHS_NUMBERS if n in html]
    assert not found, f"an NHS number of the demo patients is on the page: {found[:1]}"


def _recording_calls(web: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path and query the web app sends the audit service from now on."""
    client: ServiceClient = web.app.state.audit_api  # type: ignore[attr-defined]
    sent: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        sent.append(str(request.url))

    monkeypatch.setattr(client.client, "event_hooks", {"request": [on_request], "response": []})
    return sent


def test_the_events_page_lists_the_submission_and_a_type_filter_narrows_it(
    web: TestClient, invoice: dict[str, Any]
) -> None:
    sign_in(web, "auditor")
    home = web.get("/")
    assert home.status_code == 303
    assert home.headers["location"] == "/auditor/events"
    page = web.get("/auditor/events")
    assert page.status_code == 200, page.text
    assert "Events recorded" in page.text  # the summary's counts
    assert "invoice.submit" in page.text
    assert f"/auditor/entities/invoice/{invoice['id']}" in page.text
    everything = _event_rows(page.text)

    narrowed = web.get("/auditor/events", params={"type": "invoice.submit"})
    assert narrowed.status_code == 200, narrowed.text
    rows = _event_rows(narrowed.text)
    assert rows
    assert len(rows) < len(everything)
    assert all("invoice.submit" in row for row in rows)
    assert any("invoice.submit" not in row for row in everything)
    assert 'value="invoice.submit"' in narrowed.text
    _no_nhs_number(page.text + narrowed.text)


def test_an_entity_page_shows_the_invoice_history_in_time_order(
    web: TestClient, invoice: dict[str, Any]
) -> None:
    sign_in(web, "auditor")
    page = web.get(f"/auditor/entities/invoice/{invoice['id']}")
    assert page.status_code == 200, page.text
    assert invoice["id"] in page.text
    table = "".join(_event_rows(page.text))
    seqs = [int(s.replace(",", "")) for s in re.findall(r"event ([0-9,]+)</span>", table)]
    assert seqs
    assert seqs == sorted(seqs)
    # Submitted before validated: the page shows the lifecycle as it happened.
    assert table.index("invoice.submit") < table.index("invoice.validate")
    _no_nhs_number(page.text)


@pytest.mark.parametrize(
    ("field", "value"),
    [("actor", NHS_NUMBERS[0]), ("entity", "1983-03-25"), ("type", "check ZT6 4GF")],
)
def test_an_identifier_shaped_filter_is_refused_and_never_sent(
    web: TestClient, monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    sign_in(web, "auditor")
    sent = _recording_calls(web, monkeypatch)
    page = web.get("/auditor/events", params={field: value, "source": "cef-api"})
    assert page.status_code == 422
    assert "nhsuk-error-summary" in page.text
    assert f'href="#{field}"' in page.text
    assert "<title>Error: Audit events" in page.text
    # The value is kept in its field, as typed, and the others with it.
    assert f'value="{value}"' in page.text
    assert 'value="cef-api"' in page.text
    assert sent == []
    # The export refuses it the same way.
    export = web.get("/auditor/events.csv", params={field: value})
    assert export.status_code == 422
    assert sent == []


def test_a_date_range_is_sent_as_times_and_a_wrong_date_is_refused(
    web: TestClient, monkeypatch: pytest.MonkeyPatch, invoice: dict[str, Any]
) -> None:
    sign_in(web, "auditor")
    sent = _recording_calls(web, monkeypatch)
    today = time.gmtime()
    day = {"day": str(today.tm_mday), "month": str(today.tm_mon), "year": str(today.tm_year)}
    page = web.get(
        "/auditor/events",
        params={"type": "invoice.submit", **{f"since-{k}": v for k, v in day.items()}},
    )
    assert page.status_code == 200, page.text
    assert any("invoice.submit" in row for row in _event_rows(page.text))
    assert any("since=" in url and "T00%3A00%3A00Z" in url for url in sent)
    refused = web.get("/auditor/events", params={"until-day": "31", "until-month": "2", "until-year": "2026"})
    assert refused.status_code == 422
    assert 'href="#until"' in refused.text


def test_the_verification_page_shows_the_chain_verified(web: TestClient, invoice: dict[str, Any]) -> None:
    sign_in(web, "auditor")
    page = web.get("/auditor/verification")
    assert page.status_code == 200, page.text
    assert "Verified" in page.text
    assert "Broken" not in page.text
    length = re.search(r"Events in the log\s*</dt>\s*<dd[^>]*>\s*([0-9,]+)", page.text)
    assert length is not None
    assert int(length.group(1).replace(",", "")) > 0
    assert re.search(r"[0-9a-f]{64}", page.text)  # the head hash


def test_the_export_streams_csv_with_a_filename(web: TestClient, invoice: dict[str, Any]) -> None:
    sign_in(web, "auditor")
    r = web.get("/auditor/events.csv", params={"entity": invoice["id"]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert ".csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows
    assert {row["entity_id"] for row in rows} == {invoice["id"]}
    assert "invoice.submit" in {row["type"] for row in rows}
    _no_nhs_number(r.text)


def test_re_identifications_by_person_show_who_which_line_and_why(
    web: TestClient, stack: Stack, invoice: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    staff = stack.api_headers("invoices:validate", org="00C", sub="staff-reidentifier")
    with stack.api() as api:
        lines = api.get(f"/v1/invoices/{invoice['id']}/lines", params={"limit": 5000}, headers=staff)
        assert lines.status_code == 200, lines.text
        line = next(x for x in lines.json()["items"] if x["patient_token"])
        r = api.post(
            f"/v1/invoices/{invoice['id']}/lines/{quote(line['line_ref'], safe='')}/reidentify",
            json={"purpose": "resolve-query", "reason": "Checking the registration behind the query."},
            headers=staff,
        )
        assert r.status_code == 200, r.text
    _wait_for(
        "the re-identification event",
        lambda: bool(_audit_events(stack, type="patient.reidentify", actor="staff-reidentifier")),
    )
    sign_in(web, "auditor")
    page = post_form(
        web, "/auditor/reidentifications", "/auditor/reidentifications", {"person": "staff-reidentifier"}
    )
    assert page.status_code == 200, page.text
    assert "staff-reidentifier" in page.text
    assert "resolve-query" in page.text
    assert line["patient_token"] in page.text
    assert f"/auditor/entities/invoice/{invoice['id']}" in page.text
    _no_nhs_number(page.text)

    # By the patient's token, posted, never in an address.
    by_patient = post_form(
        web,
        "/auditor/reidentifications",
        "/auditor/reidentifications",
        {"patient_token": line["patient_token"]},
    )
    assert by_patient.status_code == 200
    assert "staff-reidentifier" in by_patient.text
    nobody = post_form(
        web, "/auditor/reidentifications", "/auditor/reidentifications", {"person": "someone-else"}
    )
    assert "staff-reidentifier" not in nobody.text
    # An NHS number typed as the token is refused, kept in the field, and not sent.
    page = web.get("/auditor/reidentifications")
    sent = _recording_calls(web, monkeypatch)
    refused = web.post(
        "/auditor/reidentifications",
        data={"csrf_token": csrf_of(page), "patient_token": NHS_NUMBERS[0]},
    )
    assert refused.status_code == 422
    assert 'href="#patient_token"' in refused.text
    assert f'value="{NHS_NUMBERS[0]}"' in refused.text
    assert sent == []


def test_a_broken_chain_is_shown_broken_at_its_first_bad_event(
    web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(web, "auditor")
    client: ServiceClient = web.app.state.audit_api  # type: ignore[attr-defined]
    issued = datetime.now(UTC) - timedelta(minutes=5)
    answers: dict[str, Any] = {
        "/v1/verify": {
            "valid": False,
            "length": 40,
            "head": "b" * 64,
            "first_bad_seq": 17,
            "reason": "event 17's hash is not the hash of its record",
            "problems": ["event 17: stored hash differs from the record's"],
            "events_checked": 40,
            "checkpoints_checked": 1,
            "kept_checkpoints_checked": 0,
            "latest_checkpoint": None,
            "duration_ms": 3.2,
        },
        "/v1/checkpoints": {
            "origin": "cef-audit",
            "length": 30,
            "head": "c" * 64,
            "issued_at": issued.isoformat().replace("+00:00", "Z"),
            "kid": "test-key",
            "jws": "a.b.c",
        },
    }

    async def answer(person: Any, path: str, **params: Any) -> Any:
        return answers[path]

    monkeypatch.setattr(client, "get", answer)
    page = web.get("/auditor/verification")
    assert page.status_code == 200
    assert "Broken at event 17" in page.text
    assert "Verified" not in page.text
    assert "Event 17 is the first that cannot be trusted" in page.text
    assert "1 to 30" in page.text
    assert "5 minutes ago" in page.text
    assert "c" * 64 in page.text


@pytest.mark.parametrize(("role", "org"), [("provider", "RTR"), ("staff", "00C")])
@pytest.mark.parametrize(
    "path", ["/auditor/events", "/auditor/verification", "/auditor/reidentifications", "/auditor/events.csv"]
)
def test_other_roles_cannot_use_the_auditor_pages(web: TestClient, role: str, org: str, path: str) -> None:
    sign_in(web, role, org)
    assert web.get(path).status_code == 403


def test_an_identifier_shaped_entity_address_is_not_passed_on(
    web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(web, "auditor")
    sent = _recording_calls(web, monkeypatch)
    page = web.get(f"/auditor/entities/invoice/{NHS_NUMBERS[0]}")
    assert page.status_code == 404
    assert NHS_NUMBERS[0] not in page.text
    assert sent == []


def test_the_demo_patients_file_is_read() -> None:
    # The NHS-number checks above are only as good as the list they check against.
    assert len(NHS_NUMBERS) > 100
    assert all(re.fullmatch(r"[0-9]{10}", n) for n in NHS_NUMBERS)
