"""The board's report page: the API's outcome report drawn and tabled as the API answered it,
hidden cells shown as * and explained, filters checked, and the page refused to other roles."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import Stack, sign_in

COMMISSIONER = "00C"


@pytest.fixture(scope="module")
def submitted(stack: Stack) -> dict[str, Any]:
    """A validated demo invoice to 00C: its lines are counted by the report."""
    return stack.submit_demo("RTR-201904-0000")


def api_report(stack: Stack, **params: str) -> dict[str, Any]:
    with stack.api() as api:
        r = api.get(
            "/v1/reports/outcomes",
            params=params,
            headers=stack.api_headers("reports:read", org=COMMISSIONER),
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def table_rows(page: str) -> dict[str, dict[str, str]]:
    """The report table's line counts as the page shows them: {row key: {outcome or total: count}}."""
    body = page.split('<tbody class="nhsuk-table__body">', 1)[1].split("</tbody>", 1)[0]
    rows: dict[str, dict[str, str]] = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        key = re.search(r'<th scope="row"[^>]*>(.*?)</th>', row, flags=re.S)
        assert key
        cells = re.findall(r'data-outcome="([a-z]+)" data-measure="lines">([^<]*)</td>', row)
        rows[html.unescape(key.group(1).strip())] = {outcome: value.strip() for outcome, value in cells}
    return rows


def shown(cell: dict[str, Any]) -> str:
    """A cell's lines as the page should show them."""
    return "*" if cell["lines"] == "*" else f"{cell['lines']:,}"


def test_the_month_report_shows_the_api_counts_with_hidden_cells_as_stars(
    web: TestClient, stack: Stack, submitted: dict[str, Any]
) -> None:
    report = api_report(stack, by="month")
    sign_in(web, "board", COMMISSIONER)
    page = web.get("/board/reports")
    assert page.status_code == 200
    assert "<title>Outcomes by month" in page.text
    rows = table_rows(page.text)
    assert report["rows"], "the demo invoice's lines are counted"
    for row in report["rows"]:
        for outcome in report["columns"]:
            assert rows[row["key"]][outcome] == shown(row["cells"][outcome]), (row["key"], outcome)
        assert rows[row["key"]]["total"] == shown(row["total"])
    assert rows["All"]["total"] == shown(report["totals"]["total"])
    # The demo invoice's few query and rejected lines of its one month are hidden by the API.
    hidden = [
        (row["key"], outcome)
        for row in report["rows"]
        for outcome in report["columns"]
        if row["cells"][outcome]["lines"] == "*"
    ]
    assert hidden
    for key, outcome in hidden:
        assert rows[key][outcome] == "*"
    threshold = report["suppression"]["threshold"]
    assert f"fewer than {threshold + 1} lines (1 to {threshold})" in page.text
    assert "so that no patient can be recognised" in page.text
    assert report["suppression"]["explanation"] in html.unescape(page.text)
    # An outcome with a shown count is drawn; a hidden count is never drawn as a bar, but said.
    drawn = [o for o in report["columns"] if any(r["cells"][o]["lines"] != "*" for r in report["rows"])]
    assert page.text.count('<figure class="cef-chart">') == len(drawn)
    assert "Not drawn" in page.text


def test_a_shown_count_is_drawn_in_its_chart(
    web: TestClient, stack: Stack, submitted: dict[str, Any]
) -> None:
    report = api_report(stack, by="month")
    sign_in(web, "board", COMMISSIONER)
    page = web.get("/board/reports").text
    charts = re.findall(r'<figure class="cef-chart">(.*?)</figure>', page, flags=re.S)
    valid = next(chart for chart in charts if "Valid lines by month</figcaption>" in chart)
    for row in report["rows"]:
        lines = row["cells"]["valid"]["lines"]
        if lines != "*":
            assert re.search(rf'class="cef-chart__value">{lines:,}</text>', valid)
            assert row["key"] in valid


def test_the_report_by_provider_and_reason_follows_the_form(
    web: TestClient, stack: Stack, submitted: dict[str, Any]
) -> None:
    sign_in(web, "board", COMMISSIONER)
    by_provider = web.get("/board/reports", params={"by": "provider", "from": "2019-04", "to": "2019-04"})
    assert by_provider.status_code == 200
    report = api_report(stack, by="provider", **{"from": "2019-04", "to": "2019-04"})
    rows = table_rows(by_provider.text)
    assert set(rows) == {r["key"] for r in report["rows"]} | {"All"}
    assert '<option value="provider" selected' in by_provider.text

    by_reason = web.get("/board/reports", params={"by": "reason"})
    assert by_reason.status_code == 200
    reasons = api_report(stack, by="reason")
    assert reasons["totals"] is None
    assert set(table_rows(by_reason.text)) == {r["key"] for r in reasons["rows"]}
    assert "there is no totals row" in by_reason.text


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "April"}, "from", "The first month must be a month"),
        ({"to": "2019-13"}, "to", "The last month must be a month"),
        ({"from": "2019-06", "to": "2019-04"}, "from", "the same as or before the last month"),
        ({"by": "patient"}, "by", "Select what each row of the report is"),
    ],
)
def test_bad_filters_are_refused_with_the_error_summary(
    web: TestClient, params: dict[str, str], field: str, message: str
) -> None:
    sign_in(web, "board", COMMISSIONER)
    r = web.get("/board/reports", params=params)
    assert r.status_code == 422
    assert "<title>Error: " in r.text
    summary = r.text.split('class="nhsuk-error-summary', 1)[1].split("</div>", 1)[0]
    assert f'href="#{field}"' in summary
    assert message in summary
    assert "<table" not in r.text


def test_another_commissioners_board_sees_none_of_these_lines(
    web: TestClient, submitted: dict[str, Any]
) -> None:
    sign_in(web, "board", "00L")
    page = web.get("/board/reports")
    assert page.status_code == 200
    assert "No invoice lines were counted" in page.text
    assert "<table" not in page.text


@pytest.mark.parametrize(("role", "org"), [("provider", "RTR"), ("staff", COMMISSIONER), ("finance", "00C")])
def test_other_roles_get_403_on_the_board_pages(web: TestClient, role: str, org: str) -> None:
    sign_in(web, role, org)
    assert web.get("/board/reports").status_code == 403
    assert web.get("/board/reports", params={"by": "provider"}).status_code == 403
