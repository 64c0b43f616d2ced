"""Outcome reports for a commissioner's board: lines by month, provider, point of delivery or
reason against their outcomes, with small numbers hidden (suppression.py)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Final

from sqlmodel import Session

from cef_api.invoices.schemas import money
from cef_api.reports import repository
from cef_api.reports.repository import OUTCOMES, ReportBy
from cef_api.reports.schemas import (
    OutcomeCells,
    OutcomeReport,
    ReportCell,
    ReportRow,
    ReportTotals,
    SuppressionOut,
)
from cef_api.reports.suppression import HIDDEN, ROUNDING, THRESHOLD, Cell, Suppression, suppress
from cef_common.audit import build_event, record_event
from cef_common.auth import Principal
from cef_common.errors import Forbidden, Unprocessable

SOURCE: Final = "cef-api"
# The board's scope; commissioner staff and finance read reports too.
REPORTS_READ: Final = "reports:read"
READERS: Final = (REPORTS_READ, "invoices:validate", "invoices:read")
UNKNOWN: Final = "unknown"
NO_REASON: Final = "none"
VALID_COLUMN: Final = OUTCOMES.index("valid")
# ASCII digits only (\d would take any script's), and a year a date can hold.
_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")

EXPLANATION: Final = (
    f"Counts of 1 to {THRESHOLD} lines are shown as *, with the cell's amounts. Other counts are "
    f"rounded to the nearest {ROUNDING} (halves up); totals are the rounded true totals, so shown "
    "cells need not add up to them. Amounts are exact where shown. Further cells are shown as * "
    "where the shown values would otherwise let a hidden one be worked out, and a row's total is "
    "hidden with its valid cell (its validated amount is that cell's). A 0 is shown: no lines."
)
NO_TOTALS: Final = (
    " A line with several reason codes counts under each of them, so columns do not add up: "
    "there is no totals row."
)


class BadPeriod(Unprocessable):
    code = "bad-period"


def month_start(value: str, *, name: str) -> date:
    match = _MONTH.fullmatch(value)
    if match is None or int(match[1]) < 1:
        raise BadPeriod(f"{name} must be a month written YYYY-MM from 0001-01, e.g. 2019-04")
    return date(int(match[1]), int(match[2]), 1)


def _next_month(first: date) -> date | None:
    """The first day after `first`'s month; None after 9999-12 (no date is later)."""
    if first.year == date.max.year and first.month == 12:
        return None
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def outcome_report(
    session: Session,
    *,
    principal: Principal,
    by: ReportBy,
    period_from: str | None,
    period_to: str | None,
    now: datetime | None = None,
) -> OutcomeReport:
    """The report of the lines addressed to the caller's commissioner, audited as one read."""
    if not any(scope in principal.scopes for scope in READERS):
        raise Forbidden(f"this request needs the scope {' or '.join(READERS)}", code="insufficient-scope")
    org = (principal.org or "").upper()
    if not org:
        raise Forbidden("the token names no organisation (org claim)", code="no-organisation")
    first_day = month_start(period_from, name="from") if period_from else None
    last_month = month_start(period_to, name="to") if period_to else None
    if first_day and last_month and first_day > last_month:
        raise BadPeriod("from is after to: give from as the earlier month (both are included)")
    groups = repository.outcome_groups(
        session,
        commissioner_code=org,
        by=by,
        first_day=first_day,
        end_day=_next_month(last_month) if last_month else None,
    )
    keys, lines, claimed = _table(by, groups)
    table = suppress(lines, width=len(OUTCOMES), column_totals=by != "reason", echo_column=VALID_COLUMN)
    amounts = _amounts(claimed, table)
    report = OutcomeReport(
        commissioner_code=org,
        by=by,
        from_=period_from,
        to=period_to,
        generated_at=now or datetime.now(UTC),
        columns=list(OUTCOMES),
        rows=[_row(key, r, table, amounts) for r, key in enumerate(keys)],
        totals=_totals(table, amounts),
        suppression=SuppressionOut(
            threshold=THRESHOLD,
            rounding=ROUNDING,
            explanation=EXPLANATION + ("" if table.column_totals else NO_TOTALS),
        ),
    )
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="read",
            type="report.read",
            outcome="success",
            principal=principal,
            entity_type="report",
            entity_id="outcomes",
            count=len(keys),
            detail={"by": by, "from": period_from, "to": period_to, "rows": len(keys)},
        ),
    )
    return report


def _table(
    by: ReportBy, groups: list[repository.Group]
) -> tuple[list[str], list[list[int]], list[list[int]]]:
    """Keys in order, and the lines and claimed pennies of each key and outcome."""
    lines: dict[str, list[int]] = defaultdict(lambda: [0] * len(OUTCOMES))
    claimed: dict[str, list[int]] = defaultdict(lambda: [0] * len(OUTCOMES))
    for group in groups:
        column = OUTCOMES.index(group.outcome)
        for key in _keys(by, group.key):
            lines[key][column] += group.lines
            claimed[key][column] += group.claimed_pennies
    keys = sorted(lines)
    return keys, [lines[k] for k in keys], [claimed[k] for k in keys]


def _keys(by: ReportBy, raw: str | None) -> list[str]:
    if by != "reason":
        return [raw if raw else UNKNOWN]
    # A code twice on a line still counts the line once under it.
    codes = sorted({code.strip() for code in (raw or "").split(";") if code.strip()})
    return codes or [NO_REASON]


def _amounts(claimed: list[list[int]], table: Suppression) -> dict[Cell, tuple[int, int]]:
    """Each grid cell's (claimed, validated) pennies, margins included: validated is the claimed
    amount of the valid lines, so non-zero only in the valid column and in totals."""
    width = table.width
    out: dict[Cell, tuple[int, int]] = {}
    for r, row in enumerate(claimed):
        for c, pennies in enumerate(row):
            out[(r, c)] = (pennies, pennies if c == VALID_COLUMN else 0)
        out[(r, width)] = (sum(row), row[VALID_COLUMN])
    if table.column_totals:
        totals = [sum(row[c] for row in claimed) for c in range(width)]
        for c, pennies in enumerate(totals):
            out[(table.height, c)] = (pennies, pennies if c == VALID_COLUMN else 0)
        out[(table.height, width)] = (sum(totals), totals[VALID_COLUMN])
    return out


def _cell(cell: Cell, table: Suppression, amounts: dict[Cell, tuple[int, int]]) -> ReportCell:
    shown = table.shown(cell)
    if shown == HIDDEN:
        return ReportCell(lines=HIDDEN, claimed_amount=HIDDEN, validated_amount=HIDDEN)
    claimed, validated = amounts[cell]
    return ReportCell(
        lines=shown, claimed_amount=money(claimed) or "0.00", validated_amount=money(validated) or "0.00"
    )


def _cells(row: int, table: Suppression, amounts: dict[Cell, tuple[int, int]]) -> OutcomeCells:
    valid, query, rejected = (_cell((row, c), table, amounts) for c in range(len(OUTCOMES)))
    return OutcomeCells(valid=valid, query=query, rejected=rejected)


def _row(key: str, row: int, table: Suppression, amounts: dict[Cell, tuple[int, int]]) -> ReportRow:
    return ReportRow(
        key=key, cells=_cells(row, table, amounts), total=_cell(table.row_total(row), table, amounts)
    )


def _totals(table: Suppression, amounts: dict[Cell, tuple[int, int]]) -> ReportTotals | None:
    row = table.totals_row
    if row is None:
        return None
    return ReportTotals(cells=_cells(row, table, amounts), total=_cell(table.row_total(row), table, amounts))
