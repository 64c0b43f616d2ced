"""GET /v1/invoices/{id}/lines with Accept: text/csv: every line, streamed page by page; outcomes
for the provider, the audited detail for CEF staff, formulas defused, refusals as for JSON (both
databases)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from api_support import identifiers_in
from exports_support import FORMULA_REFS, Submitted, events, parse

from cef_api.invoices import exports, repository
from cef_api.reasons.catalogue import CATALOGUE

CSV = {"Accept": "text/csv"}
PROVIDER_COLUMNS = [
    "line_no",
    "line_ref",
    "outcome",
    "reasons",
    "explanation",
    "responsible_commissioner",
    "expected_amount",
]
STAFF_COLUMNS = [
    *PROVIDER_COLUMNS,
    "patient_token",
    "activity_date",
    "hrg_code",
    "point_of_delivery",
    "service_code",
    "claimed_amount",
    "state",
    "decision",
    "decided_amount",
    "decision_reason",
]


def _cell(value: Any) -> str:
    """A JSON value as the CSV writes it: empty for null, an apostrophe before a formula."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def test_the_provider_gets_every_line_with_its_outcome_and_explanation(
    submitted: Submitted, world: Any
) -> None:
    s = submitted
    r = await s.api.client.get(s.lines_url, headers={**s.provider, **CSV})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    number = s.inv.header["invoice_number"]
    assert r.headers["content-disposition"] == f'attachment; filename="{number}-lines.csv"'
    assert r.headers["cache-control"] == "no-store"
    columns, rows = parse(r.content)
    assert columns == PROVIDER_COLUMNS
    lines = await s.api.lines(s.invoice["id"], "invoices:submit", s.inv.header["provider_code"])
    assert len(rows) == len(lines) == len(s.inv.expected)
    for row, line in zip(rows, lines, strict=True):
        assert row["line_ref"] == _cell(line["line_ref"])
        assert row["outcome"] == line["outcome"]
        assert row["reasons"] == ";".join(line["reasons"])  # every code whole
        assert row["explanation"] == " ".join(CATALOGUE[c].summary for c in line["reasons"])
        assert row["responsible_commissioner"] == _cell(line["responsible_commissioner"])
        assert row["expected_amount"] == _cell(line["expected_amount"])
    assert [int(row["line_no"]) for row in rows] == sorted(int(row["line_no"]) for row in rows)
    # What the world expected of each line, whatever the line_ref became.
    by_ref = {e.line_ref: e for e in s.inv.expected}
    for row, line in zip(rows, lines, strict=True):
        world_ref = next((k for k, v in s.refs.items() if v == line["line_ref"]), line["line_ref"])
        assert row["outcome"] == by_ref[world_ref].outcome
    # No identifier of the world in the file, and a provider's export is not a patient-level read.
    assert identifiers_in([("provider csv", r.text)], world) == []
    assert events(s.api, "invoice.lines.export") == []


async def test_formulas_typed_by_the_provider_are_defused(submitted: Submitted) -> None:
    s = submitted
    r = await s.api.client.get(s.lines_url, headers={**s.provider, **CSV})
    _, rows = parse(r.content)
    refs = [row["line_ref"] for row in rows]
    for formula in FORMULA_REFS:
        assert "'" + formula in refs, formula
    # On the wire every such cell starts with the apostrophe (quoted or not), never with the formula.
    for raw_line in r.text.split("\r\n")[1:]:
        cell = raw_line.split(",", 2)[1] if raw_line else ""
        assert not cell.lstrip('"').startswith(("=", "+", "-", "@")), raw_line


async def test_staff_get_the_detail_as_one_audited_read(submitted: Submitted, world: Any) -> None:
    s = submitted
    staff_lines = await s.api.lines(s.invoice["id"], "invoices:validate", s.inv.header["commissioner_code"])
    query = [x for x in staff_lines if x["outcome"] == "query"]
    assert query, "the world drew no query line"
    # A reason that is a formula is defused like any other cell.
    r = await s.api.client.post(
        f"{s.lines_url}/{query[0]['line_ref']}/decision",
        json={"decision": "reject", "reason": "=SUM(A1:A9) no referral on file"},
        headers=s.staff,
    )
    assert r.status_code == 200, r.text
    before = len(events(s.api, "invoice.lines.export"))

    r = await s.api.client.get(s.lines_url, headers={**s.staff, **CSV})
    assert r.status_code == 200, r.text
    columns, rows = parse(r.content)
    assert columns == STAFF_COLUMNS
    lines = await s.api.lines(s.invoice["id"], "invoices:validate", s.inv.header["commissioner_code"])
    assert len(rows) == len(lines)
    for row, line in zip(rows, lines, strict=True):
        for column in STAFF_COLUMNS:
            if column == "reasons":
                assert row[column] == ";".join(line["reasons"])
            elif column != "explanation":
                assert row[column] == _cell(line[column]), column
    decided = next(row for row in rows if row["line_ref"] == _cell(query[0]["line_ref"]))
    assert decided["state"] == "rejected"
    assert decided["decision_reason"] == "'=SUM(A1:A9) no referral on file"
    assert any(row["patient_token"] for row in rows)
    assert identifiers_in([("staff csv", r.text)], world) == []

    exported = events(s.api, "invoice.lines.export")
    assert len(exported) == before + 1
    event = exported[-1]
    assert (event["action"], event["outcome"]) == ("read", "success")
    assert event["entity"]["type"] == "invoice"
    assert event["entity"]["id"] == s.invoice["id"]
    assert event["entity"]["count"] == len(rows)
    assert event["detail"] == {"with": "patient_token"}
    assert event["actor"]["sub"] == "cef-officer"


async def test_the_export_event_is_committed_before_the_first_byte(
    submitted: Submitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = submitted
    seen_when_streaming: list[int] = []
    real_pages = exports._line_pages

    def pages(*args: Any, **kwargs: Any) -> Any:
        # Runs when the first chunk is wanted: the event must already be readable by anyone.
        seen_when_streaming.append(len(events(s.api, "invoice.lines.export")))
        yield from real_pages(*args, **kwargs)

    monkeypatch.setattr(exports, "_line_pages", pages)
    r = await s.api.client.get(s.lines_url, headers={**s.staff, **CSV})
    assert r.status_code == 200
    assert seen_when_streaming == [1]


async def test_a_large_export_is_read_a_page_at_a_time(
    submitted: Submitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = submitted
    reads: list[int] = []
    real = repository.page_line_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        page = real(*args, **kwargs)
        reads.append(len(page))
        return page

    monkeypatch.setattr(exports, "PAGE_LINES", 7)
    monkeypatch.setattr(repository, "page_line_rows", counted)
    whole = len(s.inv.expected)
    r = await s.api.client.get(s.lines_url, headers={**s.staff, **CSV})
    _, rows = parse(r.content)
    assert len(rows) == whole
    assert [int(row["line_no"]) for row in rows] == list(range(1, whole + 1))
    assert max(reads) <= 7
    assert len(reads) == whole // 7 + 1

    # One outcome only: its lines, and the event counts them.
    r = await s.api.client.get(s.lines_url, params={"outcome": "query"}, headers={**s.staff, **CSV})
    _, rows = parse(r.content)
    expected_query = [e for e in s.inv.expected if e.outcome == "query"]
    assert {row["outcome"] for row in rows} <= {"query"}
    assert len(rows) == len(expected_query) == s.invoice["summary"]["query"]
    event = events(s.api, "invoice.lines.export")[-1]
    assert event["entity"]["count"] == len(rows)
    assert event["detail"] == {"with": "patient_token", "outcome": "query"}


async def test_json_stays_the_default(submitted: Submitted) -> None:
    s = submitted
    for accept in (None, "*/*", "application/json", "application/json, text/csv", "text/csv;q=0"):
        headers = {**s.provider, **({"Accept": accept} if accept else {})}
        r = await s.api.client.get(s.lines_url, params={"limit": 3}, headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json"), accept
        assert "reasons_explained" in r.json()


async def test_exports_are_refused_as_pages_are(submitted: Submitted) -> None:
    s = submitted
    api, header = s.api, s.inv.header
    other_provider = "RVW" if header["provider_code"] != "RVW" else "RTR"
    cases = [
        ({}, 401, None),
        (api.h("reference:write"), 403, "insufficient-scope"),
        (s.finance, 403, "lines-not-for-finance"),
        (api.h("invoices:submit", org=other_provider), 404, None),
        (api.h("invoices:validate", org="X24"), 404, None),
    ]
    for headers, status, code in cases:
        r = await api.client.get(s.lines_url, headers={**headers, **CSV})
        assert r.status_code == status, (headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if code:
            assert r.json()["code"] == code
    r = await api.client.get("/v1/invoices/no-such-invoice/lines", headers={**s.staff, **CSV})
    assert r.status_code == 404
    r = await api.client.get(s.lines_url, params={"outcome": "odd"}, headers={**s.staff, **CSV})
    assert r.status_code == 422
    # No refused export is on record as an export.
    assert events(api, "invoice.lines.export") == []

    # An invoice still being validated is not exported half-done.
    with api.app.state.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE invoice SET status = 'validating' WHERE id = :id"), {"id": s.invoice["id"]}
        )
    r = await api.client.get(s.lines_url, headers={**s.provider, **CSV})
    assert r.status_code == 409
    assert r.json()["code"] == "invoice-not-ready"
    assert r.json()["state"] == "validating"
