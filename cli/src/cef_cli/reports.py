"""`cef reports ...`: aggregate reports for the commissioner's board, small numbers suppressed.
Light at import: httpx and rich inside the commands."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cef_cli.common import (
    DataDirOption,
    api_client,
    call,
    console,
    expect,
    fail,
    group,
    org_code,
    out,
    print_next,
    print_table,
    table,
    wrapped,
)

app = group("Reports for the commissioner's board: aggregates only, small numbers suppressed.")

SUPPRESSED = "*"


class By(StrEnum):
    month = "month"
    provider = "provider"
    point_of_delivery = "point_of_delivery"
    reason = "reason"


def _month(value: str | None, option: str) -> str | None:
    if value is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value.strip()):
        fail(f"{option} {value!r} is not a month: give it as YYYY-MM, e.g. 2019-04", code=2)
    return value.strip() if value else None


def _cell(cell: dict[str, Any] | None) -> str:
    """A cell's lines over its claimed amount; a hidden one is "*" (its amounts are hidden with it)."""
    if not cell:
        return ""
    lines, claimed = cell.get("lines"), cell.get("claimed_amount")
    if lines == SUPPRESSED or claimed == SUPPRESSED:
        return SUPPRESSED
    return f"{lines}\n£{claimed}"


def _explanation(body: dict[str, Any]) -> str | None:
    said = body.get("suppression")
    if isinstance(said, dict):
        said = said.get("explanation")
    return str(said) if said else None


@app.command("outcomes")
def outcomes(
    org: Annotated[
        str,
        typer.Option(
            help="Your commissioner's ODS code, e.g. 00C (its board).", metavar="ODS_CODE", show_default=False
        ),
    ],
    by: Annotated[
        By, typer.Option(help="One row per month, provider, point of delivery or reason code.")
    ] = By.month,
    from_: Annotated[str | None, typer.Option("--from", help="From this month, YYYY-MM.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="To this month (included), YYYY-MM.")] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Line outcomes of the commissioner's invoices, counted and summed by month, provider, point
    of delivery or reason code. Counts too small to publish show as "*".

    For example:

    \b
      cef reports outcomes --org 00C
      cef reports outcomes --org 00C --by provider --from 2019-04 --to 2019-06"""
    from rich.text import Text

    params = {"by": by.value, "from": _month(from_, "--from"), "to": _month(to, "--to")}
    with api_client(data_dir, role="board", org=org) as client, console.status("counting…"):
        body = expect(
            call(client, "GET", "/v1/reports/outcomes", params={k: v for k, v in params.items() if v})
        )
    rows: list[dict[str, Any]] = body.get("rows") or []
    outcomes: list[str] = body.get("columns") or ["valid", "query", "rejected"]
    if not rows:
        out.print("no invoice lines in that period", highlight=False)
    else:
        title = f"lines by {by.value.replace('_', ' ')} and outcome"
        if body.get("from") or body.get("to"):
            title += f", {body.get('from') or '…'} to {body.get('to') or '…'}"
        shown = table(title=title)
        # A key (a reason code, at most) is never broken: the cells of numbers are narrow.
        shown.add_column(by.value.replace("_", " "), no_wrap=True, min_width=max(len(r["key"]) for r in rows))
        for outcome in [*outcomes, "total"]:
            shown.add_column(outcome, justify="right", no_wrap=True)
        for row in rows:
            cells = row.get("cells") or {}
            shown.add_row(Text(row["key"]), *(_cell(cells.get(o)) for o in outcomes), _cell(row.get("total")))
        totals = body.get("totals")
        if totals:
            shown.rows[-1].end_section = True
            cells = totals.get("cells") or {}
            shown.add_row("all", *(_cell(cells.get(o)) for o in outcomes), _cell(totals.get("total")))
        print_table(shown)
        out.print("Each cell: lines (rounded), then the amount claimed.", highlight=False, markup=False)
    explanation = _explanation(body)
    if explanation:
        out.print(wrapped(f"{SUPPRESSED} {explanation}", indent="", first=""), highlight=False, markup=False)
    other = By.provider if by != By.provider else By.reason
    print_next(
        f"The same by {other.value}:",
        ["reports", "outcomes", "--org", org_code(org), "--by", other.value],
        data_dir,
    )
