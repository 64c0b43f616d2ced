"""`cef queries ...`: CEF staff's work queue of query lines: list, challenge, decide (one line or
every line of an invoice with a reason). Light at import: httpx and rich inside the commands."""

from __future__ import annotations

from collections import Counter
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cef_cli.common import (
    DataDirOption,
    all_pages,
    api_client,
    call,
    console,
    expect,
    explain_reasons,
    fail,
    group,
    money_cell,
    org_code,
    out,
    print_next,
    print_table,
    reasons_width,
    segment,
    table,
    wrapped,
)

if TYPE_CHECKING:
    import httpx

app = group("Query lines waiting for CEF staff's decision (staff of the commissioner).")

UNDECIDED = ("query", "challenged", "responded")

StaffOrgOption = Annotated[
    str,
    typer.Option(
        help="Your commissioner's ODS code, e.g. 00C (CEF staff).", metavar="ODS_CODE", show_default=False
    ),
]


class AmountBasis(StrEnum):
    claimed = "claimed"
    expected = "expected"


def _challenge_cell(challenge: dict[str, Any] | None) -> str:
    if not challenge:
        return ""
    said = f"{challenge['status']} due {challenge['due_date']}"
    return f"{said} OVERDUE" if challenge.get("overdue") else said


@app.command("list")
def list_queries(
    org: StaffOrgOption,
    reason: Annotated[
        str | None, typer.Option(help="Only lines with this reason code, e.g. PRICE_MISMATCH.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's lines, e.g. RVW.")] = None,
    invoice: Annotated[str | None, typer.Option(help="Only this invoice's lines (its id).")] = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only lines in this state: query, challenged, responded, accepted or rejected."),
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """List the query lines of validated invoices sent to your commissioner, oldest invoice first,
    with each line's state and latest challenge; every page.

    For example:

    \b
      cef queries list --org 00C
      cef queries list --org 00C --provider RVW --reason PRICE_MISMATCH"""
    from rich.text import Text

    params = {
        "reason": reason.strip().upper() if reason else None,
        "provider_code": org_code(provider) if provider else None,
        "invoice_id": invoice,
        "state": state,
        "limit": 500,
    }
    with api_client(data_dir, role="staff", org=org) as client:
        items, first = all_pages(client, "/v1/queries", what="query lines", params=params)
    if not items:
        out.print("no query lines to show" if state else "no query lines left to decide", highlight=False)
        if invoice and not state:
            print_next("Approve it with:", ["invoices", "approve", invoice, "--org", org_code(org)], data_dir)
            return
        print_next(
            "Invoices of your commissioner:",
            ["invoices", "list", "--as", "staff", "--org", org_code(org)],
            data_dir,
        )
        return
    by_invoice: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_invoice.setdefault(item["invoice_id"], []).append(item)
    codes = [c for i in items for c in i["reasons"]]
    for invoice_id, lines in by_invoice.items():
        head = lines[0]
        days = head.get("age_days")
        out.print(
            f"\n{head['invoice_number']} from {head['provider_code']}, submitted {days} day(s) ago",
            highlight=False,
            markup=False,
            style="bold",
        )
        out.print(f"  id {invoice_id}", highlight=False, markup=False)
        shown = table()
        shown.add_column("line_ref", overflow="fold")
        shown.add_column("state", overflow="fold")
        shown.add_column("reasons", ratio=1, overflow="fold", min_width=reasons_width(codes))
        shown.add_column("claimed £", justify="right", no_wrap=True)
        shown.add_column("expected £", justify="right", no_wrap=True)
        shown.add_column("challenge", overflow="fold")
        for line in lines:
            shown.add_row(
                Text(str(line.get("line_ref") or f"(row {line['line_no']})")),
                line["state"],
                ", ".join(line["reasons"]),
                money_cell(line.get("claimed_amount")),
                money_cell(line.get("expected_amount")),
                _challenge_cell(line.get("challenge")),
            )
        print_table(shown)
    explain_reasons(codes, first.get("reasons_explained") or [])
    undecided = [i for i in items if i["state"] in UNDECIDED]
    if not undecided:
        print_next(
            "Approve it with:",
            ["invoices", "approve", next(iter(by_invoice)), "--org", org_code(org)],
            data_dir,
        )
        return
    first_id = undecided[0]["invoice_id"]
    common, _ = Counter(
        c for i in undecided if i["invoice_id"] == first_id for c in i["reasons"]
    ).most_common(1)[0]
    print_next(
        f"Decide every {common} line of {undecided[0]['invoice_number']} at once with:",
        ["queries", "decide", first_id, "--reason-code", common, "--accept", "--org", org_code(org)],
        data_dir,
    )


@app.command("challenge")
def challenge(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID", help="The invoice's id.")],
    line_ref: Annotated[str, typer.Argument(metavar="LINE_REF", help="The query line's line_ref.")],
    message: Annotated[
        str,
        typer.Option(
            help="Your question to the provider (10-2000 characters; name the line by its line_ref, "
            "never a patient's NHS number, date of birth or postcode)."
        ),
    ],
    org: StaffOrgOption,
    due: Annotated[
        str | None,
        typer.Option(help="Answer by this date, YYYY-MM-DD (default: the service's, 20 days from today)."),
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Ask the provider about one query line (CEF staff): the provider sees the challenge and
    answers it with `cef challenges respond`.

    For example:

    \b
      cef queries challenge ID 00001 --due 2019-06-30 --org 00C \\
          --message "Above the tariff for this HRG: please explain the price."

    (ID as `cef queries list` shows it.)"""
    body: dict[str, Any] = {"message": message}
    if due:
        try:
            body["due_date"] = date.fromisoformat(due).isoformat()
        except ValueError:
            fail(f"--due {due!r} is not a date: give it as YYYY-MM-DD, e.g. 2019-06-30", code=2)
    with api_client(data_dir, role="staff", org=org) as client, console.status("challenging…"):
        path = f"/v1/invoices/{segment(invoice_id)}/lines/{segment(line_ref)}/challenge"
        raised = expect(call(client, "POST", path, json=body), 201, 200)
    out.print(
        f"challenged line {raised['line_ref']} of {raised['invoice_number']} ({raised['provider_code']}): "
        f"{raised['status']}, due {raised['due_date']}",
        highlight=False,
        markup=False,
    )
    out.print(f"  challenge {raised['id']}", highlight=False, markup=False)
    print_next(
        f"{raised['provider_code']} sees it with:",
        ["challenges", "list", "--org", raised["provider_code"]],
        data_dir,
    )


def _remaining(client: httpx.Client, invoice_id: str) -> int | None:
    """Undecided query lines of the invoice, or None when the queue cannot say."""
    r = call(client, "GET", "/v1/queries", params={"invoice_id": invoice_id, "limit": 5000})
    if r.status_code != 200:
        return None
    page = r.json()
    if page.get("next_cursor"):
        return None
    return sum(1 for i in page.get("items") or [] if i.get("state") in UNDECIDED)


def _after_decision(client: httpx.Client, invoice_id: str, org: str, data_dir: Path) -> None:
    left = _remaining(client, invoice_id)
    if left == 0:
        print_next(
            "Every query line is decided: approve it with:",
            ["invoices", "approve", invoice_id, "--org", org_code(org)],
            data_dir,
        )
    else:
        said = f"{left} query line(s) still to decide" if left else "What is left to decide"
        print_next(f"{said}:", ["queries", "list", "--org", org, "--invoice", invoice_id], data_dir)


@app.command("decide")
def decide(
    invoice_id: Annotated[str, typer.Argument(metavar="INVOICE_ID", help="The invoice's id.")],
    org: StaffOrgOption,
    line_ref: Annotated[
        str | None,
        typer.Argument(metavar="[LINE_REF]", help="One query line's line_ref; leave out with --reason-code."),
    ] = None,
    accept: Annotated[
        bool | None,
        typer.Option("--accept/--reject", help="Accept (pay) or reject the line(s).", show_default=False),
    ] = None,
    amount: Annotated[str | None, typer.Option(help="One line: the amount to pay, e.g. 123.45.")] = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (needed to reject; no NHS number, date or postcode).")
    ] = None,
    reason_code: Annotated[
        str | None,
        typer.Option(help="Every undecided query line of the invoice with this reason, e.g. PRICE_MISMATCH."),
    ] = None,
    amount_basis: Annotated[
        AmountBasis | None,
        typer.Option(
            help="With --reason-code --accept: pay each line its claimed (default) or expected amount."
        ),
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Decide query lines (CEF staff): one line, or every undecided query line of the invoice
    with a reason code. Deciding a challenged line closes its challenge.

    For example, one line, then every line with a reason:

    \b
      cef queries decide ID 00011 --accept --amount 5639.22 --org 00C
      cef queries decide ID 00013 --reject --reason "not ours" --org 00C
      cef queries decide ID --reason-code PRICE_MISMATCH --accept \\
          --amount-basis expected --org 00C"""
    if accept is None:
        fail("say whether to --accept or --reject the line(s)", code=2)
    if (line_ref is None) == (reason_code is None):
        fail("give either a LINE_REF (one line) or --reason-code CODE (every line with it), not both", code=2)
    if not accept and not reason:
        fail('rejecting needs --reason "why"', code=2)
    if line_ref is not None:
        if amount_basis is not None:
            fail("--amount-basis is for --reason-code: one line is accepted at --amount", code=2)
        if accept and amount is None:
            fail("accepting one line needs --amount, e.g. --amount 123.45", code=2)
        if not accept and amount is not None:
            fail("--amount is for --accept", code=2)
        body: dict[str, Any] = {"decision": "accept" if accept else "reject"}
        if amount is not None:
            body["amount"] = amount
        if reason:
            body["reason"] = reason
        path = f"/v1/invoices/{segment(invoice_id)}/lines/{segment(line_ref)}/decision"
        with api_client(data_dir, role="staff", org=org) as client:
            with console.status("deciding…"):
                line = expect(call(client, "POST", path, json=body))
            said = f"£{line.get('decided_amount')}" if accept else (line.get("decision_reason") or "")
            out.print(
                wrapped(f"line {line['line_ref']}: {line.get('decision')}ed, {said}", indent="", first=""),
                highlight=False,
                markup=False,
            )
            _after_decision(client, invoice_id, org_code(org), data_dir)
        return
    if amount is not None:
        fail("--amount is for one line: with --reason-code use --amount-basis claimed|expected", code=2)
    if not accept and amount_basis is not None:
        fail("--amount-basis is for --accept", code=2)
    bulk: dict[str, Any] = {
        "reason_code": str(reason_code).strip().upper(),
        "decision": "accept" if accept else "reject",
    }
    if accept:
        bulk["amount"] = (amount_basis or AmountBasis.claimed).value
    if reason:
        bulk["reason"] = reason
    with api_client(data_dir, role="staff", org=org) as client:
        with console.status(f"deciding every {bulk['reason_code']} line…"):
            done = expect(
                call(client, "POST", f"/v1/invoices/{segment(invoice_id)}/queries/decision", json=bulk)
            )
        verb = "accepted" if accept else "rejected"
        paid = f", £{done['amount_total']} to pay" if accept else ""
        basis = f" at their {done.get('amount') or bulk['amount']} amount" if accept else ""
        out.print(
            f"{verb} {done['lines']} {done['reason_code']} line(s){basis}{paid}",
            highlight=False,
            markup=False,
        )
        _after_decision(client, invoice_id, org_code(org), data_dir)
