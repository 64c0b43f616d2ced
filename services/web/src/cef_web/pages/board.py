"""The board pages: the API's outcome report of the commissioner's invoice lines, by month,
provider, point of delivery or reason, drawn as charts with the same figures in a table.

The API hides small counts ("*") and rounds the others before it answers: these pages show what it
sends and never work anything out from hidden cells."""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from cef_web.api import ApiProblem, cef_api
from cef_web.auth import BoardUser
from cef_web.templating import pennies_of, render, sentence

router = APIRouter(prefix="/board")

HIDDEN: Final = "*"
# What a row of the report is, as the API's `by` takes it, and how the page names it.
REPORTS: Final = {
    "month": "Month",
    "provider": "Provider",
    "point_of_delivery": "Point of delivery",
    "reason": "Reason code",
}
OUTCOMES: Final = ("valid", "query", "rejected")
MONTH: Final = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def _amount(value: Any) -> int | str | None:
    """A cell's amount as pennies for the `pounds` filter; "*" when hidden."""
    if value == HIDDEN:
        return HIDDEN
    return pennies_of(value)


def _cell(raw: Any) -> dict[str, Any]:
    """One cell of the report as the page shows it: lines (or "*"), claimed and validated amounts."""
    cell = raw if isinstance(raw, dict) else {}
    lines = cell.get("lines")
    hidden = HIDDEN in (lines, cell.get("claimed_amount"), cell.get("validated_amount"))
    return {
        "hidden": hidden,
        "lines": HIDDEN if hidden else lines,
        "claimed": HIDDEN if hidden else _amount(cell.get("claimed_amount")),
        "validated": HIDDEN if hidden else _amount(cell.get("validated_amount")),
    }


def _row(key: str, raw: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    cells = raw.get("cells") or {}
    return {
        "key": key,
        "cells": {outcome: _cell(cells.get(outcome)) for outcome in columns},
        "total": _cell(raw.get("total")),
    }


def _chart(rows: list[dict[str, Any]], outcome: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The bars of one outcome (rows whose count is shown) and the keys whose count is hidden."""
    bars: list[tuple[str, int]] = []
    hidden: list[str] = []
    for row in rows:
        cell = row["cells"][outcome]
        if cell["hidden"]:
            hidden.append(row["key"])
        elif isinstance(cell["lines"], int):
            bars.append((row["key"], cell["lines"]))
    return bars, hidden


def _filters(by: str, period_from: str, period_to: str) -> dict[str, str]:
    """What is wrong with the report's filters, by field id (the API checks them again)."""
    errors: dict[str, str] = {}
    if by not in REPORTS:
        errors["by"] = "Select what each row of the report is: month, provider, point of delivery or reason"
    if period_from and not MONTH.match(period_from):
        errors["from"] = "The first month must be a month written as year and month, for example 2019-04"
    if period_to and not MONTH.match(period_to):
        errors["to"] = "The last month must be a month written as year and month, for example 2019-06"
    if not errors and period_from and period_to and period_from > period_to:
        errors["from"] = "The first month must be the same as or before the last month"
    return errors


@router.get("/reports")
async def reports(request: Request, person: BoardUser) -> Response:
    """The board's home: one outcome report, chosen with a GET form (by, from, to)."""
    query = request.query_params
    by = (query.get("by") or "month").strip()
    period_from = (query.get("from") or "").strip()
    period_to = (query.get("to") or "").strip()
    values = {"by": by, "from": period_from, "to": period_to}
    errors = _filters(by, period_from, period_to)
    report: dict[str, Any] | None = None
    if not errors:
        try:
            report = await cef_api(request).get(
                person, "/v1/reports/outcomes", by=by, **{"from": period_from, "to": period_to}
            )
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            field = "from" if problem.code == "bad-period" else "by"
            errors[field] = sentence(problem.detail)
    context: dict[str, Any] = {"values": values, "errors": errors, "reports": REPORTS, "report": None}
    if report is not None:
        columns = [c for c in (report.get("columns") or OUTCOMES) if isinstance(c, str)]
        rows = [_row(str(r.get("key", "")), r, columns) for r in report.get("rows") or []]
        totals = report.get("totals")
        suppression = report.get("suppression") or {}
        context.update(
            report=report,
            columns=columns,
            rows=rows,
            totals=_row("All", totals, columns) if isinstance(totals, dict) else None,
            charts=[(outcome, *_chart(rows, outcome)) for outcome in columns],
            threshold=suppression.get("threshold"),
            rounding=suppression.get("rounding"),
            explanation=suppression.get("explanation"),
            any_hidden=any(cell["hidden"] for row in rows for cell in [*row["cells"].values(), row["total"]]),
            row_label=REPORTS[by],
        )
    title = f"Outcomes by {REPORTS.get(by, REPORTS['month']).lower()}"
    return render(request, "board/reports.html", status_code=422 if errors else 200, title=title, **context)
