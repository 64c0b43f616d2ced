"""`cef finance ...`: the commissioner's finance: what is approved to pay, recording payments,
and the list as CSV for the ledger. Light at import: httpx and rich inside the commands."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from cef_cli.common import (
    DataDirOption,
    all_pages,
    api_client,
    call,
    console,
    download,
    fail,
    group,
    org_code,
    out,
    print_next,
    print_table,
    problem_text,
    segment,
    shown_path,
    table,
)

app = group("Finance of the commissioner: invoices approved to pay, payments, the ledger export.")

FinanceOrgOption = Annotated[
    str,
    typer.Option(
        help="Your commissioner's ODS code, e.g. 00C (finance).", metavar="ODS_CODE", show_default=False
    ),
]


@app.command("approved")
def approved(org: FinanceOrgOption, data_dir: DataDirOption = Path("var")) -> None:
    """List the invoices approved and not yet paid in full (every page), with their ledger
    references and what is left to pay.

    For example:

    \b
      cef finance approved --org 00C"""
    from rich.text import Text

    with api_client(data_dir, role="finance", org=org) as client:
        items, first = all_pages(
            client, "/v1/invoices/approved-to-pay", what="invoices", params={"limit": 500}
        )
    if not items:
        out.print("nothing approved is waiting to be paid", highlight=False)
        print_next(
            "Every invoice of your commissioner:",
            ["invoices", "list", "--as", "finance", "--org", org_code(org)],
            data_dir,
        )
        return
    shown = table(title=f"{len(items)} invoice(s) to pay")
    shown.add_column("invoice / id", no_wrap=True)
    shown.add_column("status / ledger", overflow="fold")
    shown.add_column("approved £", justify="right", no_wrap=True)
    shown.add_column("unpaid £", justify="right", no_wrap=True)
    for item in items:
        shown.add_row(
            Text(f"{item['invoice_number']} {item['provider_code']}\n{item['id']}"),
            Text(f"{item['status']}\n{item.get('ledger_reference') or ''}"),
            item["approved_amount"],
            item["unpaid_amount"],
        )
    print_table(shown)
    if "total_unpaid_amount" in first:
        out.print(
            f"approved £{first.get('total_approved_amount')}, unpaid £{first['total_unpaid_amount']}",
            highlight=False,
            markup=False,
        )
    item = items[0]
    print_next(
        f"Record the payment of {item['invoice_number']} (your ledger's reference) with:",
        [
            "finance",
            "pay",
            item["id"],
            "--amount",
            item["unpaid_amount"],
            "--reference",
            "BACS-REFERENCE",
            "--paid-on",
            date.today().isoformat(),
            "--org",
            org_code(org),
        ],
        data_dir,
    )


@app.command("pay")
def pay(
    invoice_id: Annotated[
        str,
        typer.Argument(metavar="INVOICE_ID", help="The invoice's id, as `cef finance approved` shows it."),
    ],
    amount: Annotated[str, typer.Option(help="Pounds paid, e.g. 1006.92: at most what is unpaid.")],
    reference: Annotated[
        str, typer.Option(help="The ledger's payment reference, e.g. BACS-2019-0001 (again: nothing new).")
    ],
    paid_on: Annotated[str, typer.Option(help="The date it was paid, YYYY-MM-DD (not in the future).")],
    org: FinanceOrgOption,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Record a payment of an approved invoice (finance of its commissioner). The same reference
    with the same amount and date records nothing new.

    For example (ID as `cef finance approved` shows it):

    \b
      cef finance pay ID --amount 1006.92 --reference BACS-2019-0001 \\
          --paid-on 2019-06-30 --org 00C"""
    try:
        day = date.fromisoformat(paid_on).isoformat()
    except ValueError:
        fail(f"--paid-on {paid_on!r} is not a date: give it as YYYY-MM-DD, e.g. 2019-06-30", code=2)
        return
    body = {"amount": amount, "reference": reference, "paid_on": day}
    with api_client(data_dir, role="finance", org=org) as client, console.status("recording…"):
        r = call(client, "POST", f"/v1/invoices/{segment(invoice_id)}/payments", json=body)
    if r.status_code not in (200, 201):
        fail(problem_text(r))
    payment: dict[str, Any] = r.json()
    again = " (recorded before: nothing new)" if r.headers.get("Idempotent-Replayed") == "true" else ""
    out.print(
        f"paid £{payment['amount']} as {payment['reference']} on {payment['paid_on']}{again}",
        highlight=False,
        markup=False,
    )
    out.print(
        f"  invoice {payment['invoice_status']}: approved £{payment['approved_amount']}, "
        f"paid £{payment['paid_amount']}, unpaid £{payment['unpaid_amount']}",
        highlight=False,
        markup=False,
    )
    print_next("What is left to pay:", ["finance", "approved", "--org", org_code(org)], data_dir)


@app.command("export")
def export(
    org: FinanceOrgOption,
    output: Annotated[
        Path | None,
        typer.Option(help="The CSV file to write (default: approved-to-pay-ORG-DATE.csv).", dir_okay=False),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the file if it exists.")] = False,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Save the invoices approved to pay as CSV, for the ledger: the same rows as
    `cef finance approved`.

    For example:

    \b
      cef finance export --org 00C --output to-pay.csv"""
    target = output or Path(f"approved-to-pay-{org_code(org)}-{date.today().isoformat()}.csv")
    if target.exists() and not force:
        fail(f"{shown_path(target)} exists: pass --force to overwrite it, or --output another file", code=2)
    with api_client(data_dir, role="finance", org=org) as client:
        size, rows = download(client, "/v1/invoices/approved-to-pay", output=target)
    out.print(
        f"wrote {rows} invoice(s), {size} bytes, to {shown_path(target)}", highlight=False, markup=False
    )
    print_next("The same on screen:", ["finance", "approved", "--org", org_code(org)], data_dir)
