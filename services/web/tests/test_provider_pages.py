"""The provider pages: the list of a trust's invoices, submitting one, its page with charts, filters
and the CSV of its lines, and answering challenges; against the real API with the demo world."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from web_support import DEMO, Stack, csrf_of, post_form, running_stack, sign_in

REFERENCE_PATIENTS = DEMO / "reference" / "patients.csv"


def expected_summary(invoice_number: str) -> dict[str, str]:
    with (DEMO / "expected" / "invoice_summaries.csv").open(newline="") as f:
        return next(row for row in csv.DictReader(f) if row["invoice_number"] == invoice_number)


def expected_lines(invoice_number: str) -> list[dict[str, str]]:
    with (DEMO / "expected" / "line_outcomes.csv").open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["invoice_number"] == invoice_number]


def nhs_numbers() -> set[str]:
    with REFERENCE_PATIENTS.open(newline="") as f:
        return {row["nhs_number"] for row in csv.DictReader(f) if row["nhs_number"]}


def assert_no_nhs_number(page: httpx.Response) -> None:
    found = [n for n in nhs_numbers() if n in page.text]
    assert not found, f"{page.request.url.path} shows {len(found)} NHS number(s)"


def outcome_counts(page: httpx.Response) -> dict[str, int]:
    """The figures of the 'Lines by outcome' table of an invoice page."""
    rows = re.findall(
        r'data-outcome="(valid|query|rejected)">\s*<td[^>]*>[^<]*</td>\s*<td[^>]*>([0-9,]+)</td>', page.text
    )
    return {outcome: int(count.replace(",", "")) for outcome, count in rows}


def line_outcomes_shown(page: httpx.Response) -> list[str]:
    return re.findall(r'data-line-outcome="([a-z]+)"', page.text)


@pytest.fixture(scope="module")
def demo(stack: Stack) -> dict[str, dict[str, Any]]:
    """RTR's and RVW's demo invoices, submitted through the API once for this module."""
    return {name: stack.submit_demo(name) for name in ("RTR-201904-0000", "RVW-201905-0001")}


def submission_form(invoice_number: str) -> dict[str, str]:
    header = json.loads((DEMO / "invoices" / f"{invoice_number}.json").read_bytes())
    data = {"invoice_number": header["invoice_number"], "commissioner_code": header["commissioner_code"]}
    for name in ("invoice_date", "period_start", "period_end"):
        year, month, day = header[name].split("-")
        data |= {f"{name}[day]": str(int(day)), f"{name}[month]": str(int(month)), f"{name}[year]": year}
    return data


def test_the_list_shows_the_providers_own_invoices_only(
    web: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    sign_in(web, "provider", "RTR")
    page = web.get("/provider/invoices")
    assert page.status_code == 200
    assert "RTR-201904-0000" in page.text
    assert f"/provider/invoices/{demo['RTR-201904-0000']['id']}" in page.text
    assert "RVW-201905-0001" not in page.text
    assert demo["RVW-201905-0001"]["id"] not in page.text
    assert 'href="/provider/invoices/new"' in page.text
    assert_no_nhs_number(page)


def test_submitting_the_demo_invoice_through_the_page_shows_its_outcomes(web: TestClient) -> None:
    name = "RXP-201905-0002"
    sign_in(web, "provider", "RXP")
    form = web.get("/provider/invoices/new")
    assert form.status_code == 200
    assert 'src="/static/upload.js"' in form.text
    assert 'enctype="multipart/form-data"' in form.text
    r = web.post(
        "/provider/invoices",
        data={"csrf_token": csrf_of(form), **submission_form(name)},
        files={"backing_data": (f"{name}.csv", (DEMO / "invoices" / f"{name}.csv").read_bytes(), "text/csv")},
    )
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert re.fullmatch(r"/provider/invoices/[0-9a-f-]{36}", location)
    page = web.get(location)
    assert page.status_code == 200
    assert "Invoice submitted" in page.text
    assert f"<title>Invoice {name}" in page.text
    expected = expected_summary(name)
    assert outcome_counts(page) == {o: int(expected[o]) for o in ("valid", "query", "rejected")}
    # Checked: no refresh of a page whose validation is over.
    assert 'http-equiv="refresh"' not in page.text
    assert "Refresh" not in page.headers
    assert_no_nhs_number(page)


def test_a_refused_submission_keeps_what_was_typed_and_says_what_to_fix(web: TestClient) -> None:
    sign_in(web, "provider", "RTR")
    typed = submission_form("RTR-201904-0000") | {
        "invoice_number": "RTR-WEB-REFUSED",
        "period_end[day]": "31",
    }
    # Checked by the page: 31 April is no date, and no file was chosen.
    r = post_form(web, "/provider/invoices/new", "/provider/invoices", typed)
    assert r.status_code == 422
    assert "nhsuk-error-summary" in r.text
    assert "<title>Error: Submit an invoice" in r.text
    assert 'href="#period_end-day"' in r.text
    assert 'href="#backing_data"' in r.text
    assert 'value="RTR-WEB-REFUSED"' in r.text
    assert 'value="00C"' in r.text
    assert "choose the backing data file again" in r.text
    # Refused by the API: a commissioner it does not know. The form comes back as it was typed.
    page = web.get("/provider/invoices/new")
    unknown = submission_form("RTR-201904-0000") | {
        "invoice_number": "RTR-WEB-REFUSED",
        "commissioner_code": "ZZ9",
    }
    r = web.post(
        "/provider/invoices",
        data={"csrf_token": csrf_of(page), **unknown},
        files={
            "backing_data": ("b.csv", (DEMO / "invoices" / "RTR-201904-0000.csv").read_bytes(), "text/csv")
        },
    )
    assert r.status_code == 422
    assert 'href="#commissioner_code"' in r.text
    assert "commissioner" in r.text
    assert 'value="ZZ9"' in r.text
    assert 'value="RTR-WEB-REFUSED"' in r.text
    assert "RTR-WEB-REFUSED" not in web.get("/provider/invoices").text


def test_the_invoice_page_explains_the_reasons_and_filters_its_lines(
    web: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RTR-201904-0000"
    invoice_id = demo[name]["id"]
    lines = expected_lines(name)
    sign_in(web, "provider", "RTR")
    page = web.get(f"/provider/invoices/{invoice_id}")
    assert page.status_code == 200
    assert len(line_outcomes_shown(page)) == len(lines)
    codes = {code for line in lines for code in line["reasons"].split(";") if code}
    for code in codes:
        assert f'<option value="{code}"' in page.text
    assert "What to do:" in page.text
    assert "Lines by reason" in page.text
    for outcome in ("query", "rejected", "valid"):
        filtered = web.get(f"/provider/invoices/{invoice_id}", params={"outcome": outcome})
        assert filtered.status_code == 200
        shown = line_outcomes_shown(filtered)
        assert shown == [outcome] * sum(1 for line in lines if line["outcome"] == outcome)
    code = sorted(codes)[0]
    by_reason = web.get(f"/provider/invoices/{invoice_id}", params={"reason": code})
    wanted = [line for line in lines if code in line["reasons"].split(";")]
    assert len(line_outcomes_shown(by_reason)) == len(wanted)
    assert f'<option value="{code}" selected' in by_reason.text
    assert_no_nhs_number(page)
    assert_no_nhs_number(by_reason)


def test_the_lines_download_streams_the_csv_of_every_line(
    web: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RTR-201904-0000"
    invoice_id = demo[name]["id"]
    sign_in(web, "provider", "RTR")
    page = web.get(f"/provider/invoices/{invoice_id}")
    assert f'href="/provider/invoices/{invoice_id}/lines.csv"' in page.text
    r = web.get(f"/provider/invoices/{invoice_id}/lines.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(expected_lines(name))
    assert not [n for n in nhs_numbers() if n in r.text]


def test_another_providers_invoice_is_not_shown(web: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    other = demo["RVW-201905-0001"]["id"]
    sign_in(web, "provider", "RTR")
    for path in (f"/provider/invoices/{other}", f"/provider/invoices/{other}/lines.csv"):
        r = web.get(path)
        assert r.status_code in (403, 404), path
        assert "RVW-201905-0001" not in r.text
        assert "nhsuk-table" not in r.text
    assert web.get("/provider/invoices/not-an-invoice").status_code == 404


@pytest.mark.parametrize("role", ["staff", "finance"])
def test_commissioner_roles_cannot_use_the_provider_pages(web: TestClient, role: str) -> None:
    sign_in(web, role, "00C")
    for path in ("/provider/invoices", "/provider/invoices/new", "/provider/challenges"):
        assert web.get(path).status_code == 403, path


def test_a_challenge_is_answered_through_the_page(
    stack: Stack, web: TestClient, demo: dict[str, dict[str, Any]]
) -> None:
    name = "RVW-201905-0001"
    invoice_id = demo[name]["id"]
    query = [line for line in expected_lines(name) if line["outcome"] == "query"]
    line_ref = query[0]["line_ref"]
    with stack.api() as api:
        raised = api.post(
            f"/v1/invoices/{invoice_id}/lines/{line_ref}/challenge",
            json={"message": "Please explain the amount claimed for this line."},
            headers=stack.api_headers("invoices:validate", org="00C"),
        )
    assert raised.status_code == 201, raised.text
    challenge_id = raised.json()["id"]
    sign_in(web, "provider", "RVW")
    page = web.get("/provider/challenges")
    assert page.status_code == 200
    assert "Please explain the amount claimed for this line." in page.text
    assert f'value="{challenge_id}"' in page.text
    assert_no_nhs_number(page)
    # Refused: an amount that is not pounds and pence. What was typed comes back.
    r = web.post(
        "/provider/challenges/respond",
        data={
            "csrf_token": csrf_of(page),
            "challenge_id": challenge_id,
            "message": "Our price list was out of date.",
            "corrected_amount": "twelve",
        },
    )
    assert r.status_code == 422
    assert f'href="#corrected_amount-{challenge_id}"' in r.text
    assert "Our price list was out of date." in r.text
    assert 'value="twelve"' in r.text
    r = web.post(
        "/provider/challenges/respond",
        data={
            "csrf_token": csrf_of(page),
            "challenge_id": challenge_id,
            "message": "Our price list was out of date.",
            "corrected_amount": "£1,234.5",
        },
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/provider/challenges"
    after = web.get("/provider/challenges")
    assert "Response sent" in after.text
    assert f'value="{challenge_id}"' not in after.text
    with stack.api() as api:
        answered = api.get(
            f"/v1/challenges/{challenge_id}", headers=stack.api_headers("invoices:validate", org="00C")
        ).json()
    assert answered["status"] == "responded"
    assert answered["response_message"] == "Our price list was out of date."
    assert answered["corrected_amount"] == "1234.50"
    # A second answer is refused by the API: the page says so.
    r = web.post(
        "/provider/challenges/respond",
        data={"csrf_token": csrf_of(after), "challenge_id": challenge_id, "message": "Again."},
    )
    assert r.status_code == 422
    assert "nhsuk-error-summary" in r.text


def test_an_invoice_being_validated_shows_its_progress_and_refreshes_itself(stack: Stack) -> None:
    invoice_id = "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d"
    header = json.loads((DEMO / "invoices" / "RTR-201904-0000.json").read_bytes())
    validating = {
        "id": invoice_id,
        **header,
        "status": "validating",
        "summary": {
            "lines": 0,
            "valid": 0,
            "query": 0,
            "rejected": 0,
            "claimed_amount": "0.00",
            "validated_amount": "0.00",
        },
        "lines_done": 1500,
        "submitted_at": "2026-12-03T16:00:00Z",
    }
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        # The API while a large file is checked in the background: the invoice, and no lines yet.
        asked.append(request.url.path)
        if request.url.path == f"/v1/invoices/{invoice_id}":
            return httpx.Response(200, json=validating)
        return httpx.Response(409, json={"code": "invoice-not-ready", "detail": "still being validated"})

    with stack.web() as web:
        sign_in(web, "provider", "RTR")
        service = web.app.state.cef_api  # type: ignore[attr-defined]
        real = service.client
        service.client = httpx.AsyncClient(base_url="http://cef-api", transport=httpx.MockTransport(answer))
        try:
            page = web.get(f"/provider/invoices/{invoice_id}")
        finally:
            service.client = real
    assert page.status_code == 200
    assert '<meta http-equiv="refresh" content="5">' in page.text
    assert page.headers["Refresh"] == "5"
    assert '<progress class="cef-progress"' in page.text
    assert "1,500 lines checked so far" in page.text
    # Nothing asks for lines while they are being checked.
    assert asked == [f"/v1/invoices/{invoice_id}"]


def test_withdrawing_an_invoice_needs_its_confirmation(tmp_path: Path) -> None:
    # A stack of its own: a withdrawn invoice changes what later submissions are checked against.
    with running_stack(tmp_path) as own:
        invoice_id = own.submit_demo("RTR-201904-0000")["id"]
        with own.web() as web:
            sign_in(web, "provider", "RTR")
            page_path = f"/provider/invoices/{invoice_id}"
            action = f"{page_path}/withdraw"
            r = post_form(web, page_path, action, {"withdraw_reason": "Sent to the wrong ICB"})
            assert r.status_code == 422
            assert 'href="#confirm"' in r.text
            assert "Sent to the wrong ICB" in r.text
            r = post_form(
                web, page_path, action, {"withdraw_reason": "Sent to the wrong ICB", "confirm": "yes"}
            )
            assert r.status_code == 303
            assert r.headers["location"] == page_path
            page = web.get(page_path)
            assert "Invoice withdrawn" in page.text
            assert "Withdrawn" in page.text
            assert f'action="{action}"' not in page.text
