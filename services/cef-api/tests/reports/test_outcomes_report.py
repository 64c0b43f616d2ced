"""GET /v1/reports/outcomes over HTTP on both databases: who may read it, what it counts (only the
caller's validated-or-later invoices), its totals, its suppression, and its audit event."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, api_settings, running_api

from cef_api.invoices.models import Invoice, InvoiceLine
from cef_common.testing import DevIssuer

URL = "/v1/reports/outcomes"
BOARD = "00C"


@dataclass(frozen=True)
class Lines:
    """`count` lines of one outcome, each claiming `pennies`."""

    count: int
    outcome: str
    pennies: int
    activity: date | None
    pod: str | None = None
    reasons: str = ""


def add_invoice(api: Api, *, provider: str, commissioner: str, status: str, lines: list[Lines]) -> None:
    """An invoice written straight into the database: the report reads only what validation left."""
    with api.app.state.engine.begin() as conn:
        number = f"{provider}-{uuid.uuid4().hex[:8]}"
        seq = conn.execute(
            sa.insert(Invoice.__table__).values(  # type: ignore[attr-defined]
                id=str(uuid.uuid4()),
                invoice_number=number,
                provider_code=provider,
                commissioner_code=commissioner,
                invoice_date=date(2019, 6, 3),
                period_start=date(2019, 4, 1),
                period_end=date(2019, 6, 30),
                status=status,
                submitted_at=datetime(2019, 6, 3, tzinfo=UTC),
                submitted_by="tests",
                request_hash="0" * 64,
                backing_bytes=1,
                background=False,
                lines_done=0,
                lines=0,
                valid=0,
                query=0,
                rejected=0,
                claimed_pennies=0,
                validated_pennies=0,
                reference_versions="{}",
                paid_pennies=0,
            )
        ).inserted_primary_key[0]
        rows = [
            {
                "invoice_seq": seq,
                "line_no": 0,
                "line_ref": None,
                "outcome": group.outcome,
                "reasons": group.reasons,
                "claimed_pennies": group.pennies,
                "activity_date": group.activity,
                "point_of_delivery": group.pod,
            }
            for group in lines
            for _ in range(group.count)
        ]
        for n, row in enumerate(rows, start=1):
            row["line_no"] = n
        if rows:
            conn.execute(sa.insert(InvoiceLine.__table__), rows)  # type: ignore[attr-defined]


APR, MAY = date(2019, 4, 9), date(2019, 5, 14)
RTR_LINES = [
    Lines(40, "valid", 10_000, APR, "OPFA"),
    Lines(12, "query", 5_000, APR, "OPFA", "PRICE_MISMATCH"),
    Lines(3, "rejected", 1_000, MAY, None, "DUPLICATE_ACTIVITY;NHS_NUMBER_INVALID"),
]
RVW_LINES = [
    Lines(20, "valid", 20_000, MAY, "APCE"),
    Lines(9, "query", 3_000, MAY, "APCE", "TARIFF_NOT_FOUND"),
    Lines(13, "rejected", 500, None, "APCE", "NHS_NUMBER_INVALID"),
]
NOISE = [Lines(30, "valid", 7_000, APR, "OPFA")]


@pytest.fixture
async def report_api(data_dir: Path, api_db: str, dev_issuer: DevIssuer) -> AsyncIterator[Api]:
    # No tokeniser: nothing here submits; the invoices are written by add_invoice.
    async with running_api(api_settings(data_dir, api_db, "http://127.0.0.1:9"), dev_issuer) as api:
        yield api


@pytest.fixture
def board_world(report_api: Api) -> Api:
    add_invoice(report_api, provider="RTR", commissioner=BOARD, status="validated", lines=RTR_LINES)
    add_invoice(report_api, provider="RVW", commissioner=BOARD, status="paid", lines=RVW_LINES)
    # Never counted: not (yet, or any more) validated, or another commissioner's.
    for status in ("received", "validating", "failed", "withdrawn"):
        add_invoice(report_api, provider="RTR", commissioner=BOARD, status=status, lines=NOISE)
    add_invoice(report_api, provider="RTR", commissioner="X24", status="approved", lines=NOISE)
    return report_api


def cell(lines: int | str, claimed: str, validated: str = "0.00") -> dict[str, Any]:
    return {"lines": lines, "claimed_amount": claimed, "validated_amount": validated}


HIDDEN = cell("*", "*", "*")


async def _report(api: Api, scope: str = "reports:read", org: str = BOARD, **params: str) -> dict[str, Any]:
    r = await api.client.get(URL, params=params, headers=api.h(scope, org=org))
    assert r.status_code == 200, r.text
    return r.json()


async def test_by_provider_totals_and_suppression(board_world: Api) -> None:
    report = await _report(board_world, by="provider")
    assert report["commissioner_code"] == BOARD
    assert (report["by"], report["from"], report["to"]) == ("provider", None, None)
    assert report["columns"] == ["valid", "query", "rejected"]
    # RTR's 3 rejected lines are hidden; the query and rejected cells of both providers go with
    # them, so that neither row nor column equations give any of the four back.
    assert report["rows"] == [
        {
            "key": "RTR",
            "cells": {"valid": cell(40, "4000.00", "4000.00"), "query": HIDDEN, "rejected": HIDDEN},
            "total": cell(55, "4630.00", "4000.00"),
        },
        {
            "key": "RVW",
            "cells": {"valid": cell(20, "4000.00", "4000.00"), "query": HIDDEN, "rejected": HIDDEN},
            "total": cell(40, "4335.00", "4000.00"),  # 42 lines, rounded
        },
    ]
    assert report["totals"] == {
        "cells": {
            "valid": cell(60, "8000.00", "8000.00"),
            "query": cell(20, "870.00"),  # 21 lines
            "rejected": cell(15, "95.00"),  # 16 lines
        },
        "total": cell(95, "8965.00", "8000.00"),  # 97 lines
    }
    assert report["suppression"]["threshold"] == 7
    assert report["suppression"]["rounding"] == 5
    assert "*" in report["suppression"]["explanation"]
    datetime.fromisoformat(report["generated_at"])


async def test_by_month_and_the_period_filter(board_world: Api) -> None:
    report = await _report(board_world, by="month")
    assert [row["key"] for row in report["rows"]] == ["2019-04", "2019-05", "unknown"]
    april, may, unknown = report["rows"]
    assert april["cells"]["rejected"] == cell(0, "0.00")
    # 13 rejected lines without an activity date: shown under "unknown", rounded.
    assert unknown["cells"]["rejected"] == cell(15, "65.00")
    assert may["cells"]["rejected"] == HIDDEN  # 3 lines
    _assert_consistent(report, true_grand=(97, 896_500))

    only_may = await _report(board_world, by="month", **{"from": "2019-05", "to": "2019-05"})
    assert [row["key"] for row in only_may["rows"]] == ["2019-05"]
    assert (only_may["from"], only_may["to"]) == ("2019-05", "2019-05")
    _assert_consistent(only_may, true_grand=(32, 20 * 20_000 + 9 * 3_000 + 3 * 1_000))
    from_may = await _report(board_world, by="month", **{"from": "2019-05"})
    assert [row["key"] for row in from_may["rows"]] == ["2019-05"]  # undated lines have no month
    until_april = await _report(board_world, by="month", to="2019-04")
    assert [row["key"] for row in until_april["rows"]] == ["2019-04"]
    assert until_april["rows"][0]["cells"]["valid"] == cell(40, "4000.00", "4000.00")


async def test_by_point_of_delivery(board_world: Api) -> None:
    report = await _report(board_world, by="point_of_delivery", scope="invoices:read")
    assert [row["key"] for row in report["rows"]] == ["APCE", "OPFA", "unknown"]
    apce, opfa, unknown = report["rows"]
    assert apce["cells"]["valid"] == cell(20, "4000.00", "4000.00")
    assert opfa["cells"]["rejected"] == unknown["cells"]["valid"] == cell(0, "0.00")
    # RTR's 3 rejected lines have no point of delivery: alone in their row, total included.
    assert unknown["cells"]["rejected"] == unknown["total"] == HIDDEN
    _assert_consistent(report, true_grand=(97, 896_500))


async def test_by_reason_counts_a_line_under_each_code_and_has_no_totals(board_world: Api) -> None:
    report = await _report(board_world, by="reason", scope="invoices:validate")
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == [
        "DUPLICATE_ACTIVITY",
        "NHS_NUMBER_INVALID",
        "PRICE_MISMATCH",
        "TARIFF_NOT_FOUND",
        "none",
    ]
    assert report["totals"] is None
    assert "no totals row" in report["suppression"]["explanation"]
    # RTR's 3 lines carry two codes: they count under both.
    assert rows["DUPLICATE_ACTIVITY"]["cells"]["rejected"] == HIDDEN
    assert rows["DUPLICATE_ACTIVITY"]["total"] == HIDDEN
    assert rows["NHS_NUMBER_INVALID"]["cells"]["rejected"] == cell(15, "95.00")  # 3 + 13 lines
    assert rows["NHS_NUMBER_INVALID"]["total"] == cell(15, "95.00")
    assert rows["PRICE_MISMATCH"]["cells"]["query"] == cell(10, "600.00")  # 12 lines
    assert rows["TARIFF_NOT_FOUND"]["cells"]["query"] == cell(10, "270.00")  # 9 lines
    assert rows["none"]["cells"] == {
        "valid": cell(60, "8000.00", "8000.00"),
        "query": cell(0, "0.00"),
        "rejected": cell(0, "0.00"),
    }


def _assert_consistent(report: dict[str, Any], *, true_grand: tuple[int, int]) -> None:
    """Shown counts are multiples of 5 (or 0), and shown cells of a line add up to its shown total
    whenever nothing in the line is hidden (amounts exactly)."""
    grid = [[*row["cells"].values(), row["total"]] for row in report["rows"]]
    if report["totals"] is not None:
        grid.append([*report["totals"]["cells"].values(), report["totals"]["total"]])
        lines, pennies = true_grand
        grand = report["totals"]["total"]
        if grand["lines"] != "*":
            assert grand["lines"] == (lines + 2) // 5 * 5
            assert grand["claimed_amount"] == f"{pennies / 100:.2f}"
    for line in grid:
        for value in line:
            assert value["lines"] == "*" or value["lines"] % 5 == 0
            assert (
                (value["lines"] == "*")
                == (value["claimed_amount"] == "*")
                == (value["validated_amount"] == "*")
            )
    columns = [list(col) for col in zip(*grid, strict=True)] if report["totals"] is not None else []
    for line in [*grid, *columns]:
        *parts, total = line
        if all(v["lines"] != "*" for v in line):
            assert sum(round(float(v["claimed_amount"]) * 100) for v in parts) == round(
                float(total["claimed_amount"]) * 100
            )


async def test_who_may_read_it(board_world: Api) -> None:
    api = board_world
    for scope in ("reports:read", "invoices:validate", "invoices:read"):
        assert (await api.client.get(URL, headers=api.h(scope, org=BOARD))).status_code == 200
    assert (await api.client.get(URL)).status_code == 401
    for scope, org in (("invoices:submit", "RTR"), ("reference:write", BOARD), ("audit:read", BOARD)):
        r = await api.client.get(URL, headers=api.h(scope, org=org, sub="refused"))
        assert r.status_code == 403, scope
        assert r.json()["code"] == "insufficient-scope"
    r = await api.client.get(URL, headers=api.h("reports:read"))  # no org claim
    assert r.status_code == 403
    assert r.json()["code"] == "no-organisation"
    refused = [e for e in _outbox(api) if e["type"] == "access.refused"]
    # The 401 and the four 403s, each one denied event of this route.
    assert [e["detail"]["reason"] for e in refused] == [
        "no-token",
        *["insufficient-scope"] * 3,
        "no-organisation",
    ]
    assert all(e["outcome"] == "denied" and e["detail"]["route"] == URL for e in refused)
    # Another commissioner sees its own invoices only.
    other = await _report(api, org="X24", by="provider")
    assert [row["key"] for row in other["rows"]] == ["RTR"]
    assert other["totals"]["total"] == cell(30, "2100.00", "2100.00")


async def test_bad_parameters_are_422(board_world: Api) -> None:
    api = board_world
    h = api.h("reports:read", org=BOARD)
    for params in (
        {"by": "patient"},
        {"from": "2019-13"},
        {"to": "201904"},
        {"from": "2019-4"},
        {"from": "٢٠١٩-04"},  # digits of another script
    ):
        r = await api.client.get(URL, params=params, headers=h)
        assert r.status_code == 422, params
    for params in ({"from": "2019-06", "to": "2019-05"}, {"from": "0000-01"}, {"to": "0000-12"}):
        r = await api.client.get(URL, params=params, headers=h)
        assert r.status_code == 422, params
        assert r.json()["code"] == "bad-period", params
    # The last month there is: everything from it on, with no end.
    r = await api.client.get(URL, params={"from": "2019-05", "to": "9999-12"}, headers=h)
    assert [row["key"] for row in r.json()["rows"]] == ["2019-05"]


async def test_each_read_is_one_audit_event(board_world: Api) -> None:
    api = board_world
    await _report(api, by="provider")
    await _report(api, by="month", **{"from": "2019-04", "to": "2019-05"})
    events = [e for e in _outbox(api) if e["type"] == "report.read"]
    assert len(events) == 2
    first, second = events
    assert first["entity"] == {"type": "report", "id": "outcomes", "count": 2}
    assert first["detail"] == {"by": "provider", "from": None, "to": None, "rows": 2}
    assert (first["action"], first["outcome"]) == ("read", "success")
    assert first["actor"]["org"] == BOARD
    assert second["detail"] == {"by": "month", "from": "2019-04", "to": "2019-05", "rows": 2}


def _outbox(api: Api) -> list[dict[str, Any]]:
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [json.loads(p) for (p,) in rows]


async def test_a_submitted_world_is_counted_as_its_invoices_say(
    api: Api, world: generate_world.World
) -> None:
    """Invoices submitted and validated for real: the report's true totals are their summaries'."""
    await api.load_world(world)
    summaries = []
    for inv in world.invoices:
        r = await api.submit(inv.header, inv.backing)
        assert r.status_code == 201, r.text
        summaries.append(r.json())
    commissioner = world.invoices[0].header["commissioner_code"]
    mine = [s for s in summaries if s["commissioner_code"] == commissioner]
    report = await _report(api, org=commissioner, by="provider")
    assert [row["key"] for row in report["rows"]] == sorted({s["provider_code"] for s in mine})
    lines = sum(s["summary"]["lines"] for s in mine)
    claimed = sum(round(float(s["summary"]["claimed_amount"]) * 100) for s in mine)
    _assert_consistent(report, true_grand=(lines, claimed))
    grand = report["totals"]["total"]
    assert grand["lines"] == (lines + 2) // 5 * 5  # dozens of lines: never hidden
    validated = sum(round(float(s["summary"]["validated_amount"]) * 100) for s in mine)
    assert grand["validated_amount"] == f"{validated / 100:.2f}"


async def test_the_lines_are_counted_by_the_database(board_world: Api) -> None:
    """Every statement that reads invoice_line groups it: no line is ever loaded one by one."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = board_world.app.state.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for by in ("month", "provider", "point_of_delivery", "reason"):
            await _report(board_world, by=by)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    reads = [s for s in statements if "invoice_line" in s and s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 4
    assert all("GROUP BY" in s.upper() for s in reads)


@pytest.mark.fuzz
def test_fuzzing_the_report(board_world: Api, dev_issuer: DevIssuer) -> None:
    """No 5xx and no answer outside the document, whatever any caller sends to this route."""
    from cef_api.main import create_app
    from cef_common.schema_fuzz import ANONYMOUS, GARBAGE, Caller, FuzzTarget, fuzz_operation, loaded_schema

    def caller(name: str, scope: str, org: str | None = None) -> Caller:
        return Caller(name, dev_issuer.headers(scope, org=org, sub=f"fuzz-{name}"))

    callers = [
        caller("board", "reports:read", BOARD),
        caller("staff", "invoices:validate", BOARD),
        caller("finance", "invoices:read", BOARD),
        caller("provider", "invoices:submit", "RTR"),
        caller("no-org", "reports:read"),
        ANONYMOUS,
        GARBAGE,
    ]
    target = FuzzTarget(
        create_app(board_world.settings), callers, authorised=lambda _op: ["board", "staff", "finance"]
    )
    with loaded_schema(target.app) as schema:
        operation = schema["/v1/reports/outcomes"]["GET"]
        fuzz_operation(target, operation, max_examples=60)
