"""`cef challenges ...`: staff's questions about query lines, as the provider answers them and
staff follow them. Light at import: httpx and rich inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cef_cli.common import (
    DataDirOption,
    LineRole,
    all_pages,
    api_client,
    call,
    console,
    expect,
    explain_reasons,
    group,
    org_code,
    out,
    print_next,
    print_table,
    reasons_width,
    segment,
    table,
)

app = group("Challenges of query lines: staff ask, the provider answers.")

STATUSES = ("open", "responded", "closed")


@app.command("list")
def list_challenges(
    org: Annotated[
        str,
        typer.Option(
            help="Your organisation's ODS code: the provider's (e.g. RVW), or the commissioner's "
            "(e.g. 00C) with --as staff.",
            metavar="ODS_CODE",
            show_default=False,
        ),
    ],
    as_: Annotated[
        LineRole, typer.Option("--as", help="Who you are: the provider challenged, or CEF staff.")
    ] = LineRole.provider,
    status: Annotated[
        str | None, typer.Option(help=f"Only challenges in this status: {', '.join(STATUSES)}.")
    ] = None,
    invoice: Annotated[str | None, typer.Option(help="Only this invoice's challenges (its id).")] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """List challenges (every page), overdue ones first and marked OVERDUE, then by due date: a
    provider sees those of its invoices, CEF staff those of their commissioner.

    For example:

    \b
      cef challenges list --org RVW --status open
      cef challenges list --as staff --org 00C"""
    from rich.markup import escape

    role = as_.value
    params = {"status": status, "invoice_id": invoice, "limit": 500}
    with api_client(data_dir, role=role, org=org) as client:
        items, first = all_pages(client, "/v1/challenges", what="challenges", params=params)
    if not items:
        out.print(f"no {status + ' ' if status else ''}challenges", highlight=False)
        return
    codes = [c for i in items for c in i["line"]["reasons"]]
    # Two columns: what identifies the challenge, then its free text with the room that is left.
    shown = table(title=f"{len(items)} challenge(s)")
    shown.add_column("challenge / line / status", no_wrap=True)
    shown.add_column(
        "reasons / question / → answer", ratio=1, overflow="fold", min_width=reasons_width(codes)
    )
    for item in items:
        line = item["line"]
        answer = f"\n→ {item['response_message']}" if item.get("response_message") else ""
        if item.get("corrected_amount"):
            answer += f" (£{item['corrected_amount']})"
        overdue = "\n[bold red]OVERDUE[/]" if item.get("overdue") else ""
        amounts = (
            f"claimed £{line.get('claimed_amount') or '-'}, expected £{line.get('expected_amount') or '-'}"
        )
        shown.add_row(
            escape(f"{item['id']}\n{item['invoice_number']} line {item['line_ref']}\n")
            + f"{item['status']}, due {item['due_date']}{overdue}",
            escape(f"{', '.join(line['reasons'])}\n{amounts}\n{item['message']}{answer}"),
        )
    print_table(shown)
    explain_reasons(codes, first.get("reasons_explained") or [])
    waiting = [i for i in items if i["status"] == "open"]
    if role == "provider" and waiting:
        print_next(
            "Answer the first with:",
            ["challenges", "respond", waiting[0]["id"], "--message", "YOUR ANSWER", "--org", org_code(org)],
            data_dir,
        )
        return
    answered = [i for i in items if i["status"] == "responded"]
    if role == "staff" and answered:
        item = answered[0]
        amount = item.get("corrected_amount") or item["line"].get("claimed_amount") or "0.00"
        print_next(
            "Decide the first answered line with:",
            ["queries", "decide", item["invoice_id"], item["line_ref"], "--accept", "--amount", amount]
            + ["--org", org_code(org)],
            data_dir,
        )
        return
    print_next(
        "Query lines still to decide:" if role == "staff" else "Your invoices:",
        ["queries", "list", "--org", org_code(org)]
        if role == "staff"
        else ["invoices", "list", "--org", org_code(org)],
        data_dir,
    )


@app.command("respond")
def respond(
    challenge_id: Annotated[
        str,
        typer.Argument(metavar="CHALLENGE_ID", help="The challenge's id, as `cef challenges list` shows it."),
    ],
    message: Annotated[
        str,
        typer.Option(
            help="Your answer to CEF staff (up to 2000 characters; no NHS number, date or postcode)."
        ),
    ],
    org: Annotated[
        str, typer.Option(help="Your provider's ODS code, e.g. RVW.", metavar="ODS_CODE", show_default=False)
    ],
    corrected_amount: Annotated[
        str | None, typer.Option(help="The amount you now claim for the line, if it changed, e.g. 798.05.")
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Answer a challenge about one of your query lines (the provider), with a corrected amount
    when you agree the price was wrong.

    For example (ID as `cef challenges list` shows it):

    \b
      cef challenges respond ID --message "Our price list was out of date." \\
          --corrected-amount 798.05 --org RVW"""
    body: dict[str, Any] = {"message": message}
    if corrected_amount is not None:
        body["corrected_amount"] = corrected_amount
    with api_client(data_dir, role="provider", org=org) as client, console.status("answering…"):
        answered = expect(call(client, "POST", f"/v1/challenges/{segment(challenge_id)}/response", json=body))
    out.print(
        f"answered the challenge of line {answered['line_ref']} of {answered['invoice_number']}: "
        f"{answered['status']}",
        highlight=False,
        markup=False,
    )
    if answered.get("corrected_amount"):
        out.print(f"  corrected amount £{answered['corrected_amount']}", highlight=False, markup=False)
    print_next(
        f"Staff of {answered['commissioner_code']} see the answer with:",
        [
            "challenges",
            "list",
            "--as",
            "staff",
            "--org",
            answered["commissioner_code"],
            "--status",
            "responded",
        ],
        data_dir,
    )
