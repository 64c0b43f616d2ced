"""`cef submit`, `cef invoices ...` and `cef purge`: invoices of the local CEF API."""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cef_cli.common import (
    COLUMNS,
    DataDirOption,
    LineRole,
    Role,
    all_pages,
    api_client,
    call,
    command_line,
    console,
    data_dir_args,
    download,
    expect,
    explain_reasons,
    fail,
    group,
    money_cell,
    org_code,
    out,
    print_next,
    print_table,
    problem_text,
    reason_catalogue,
    reasons_width,
    segment,
    service_env,
    shown_path,
    wrapped,
)
from cef_cli.common import table as new_table

if TYPE_CHECKING:
    import httpx

SHOWN_LINES = 20

OrgOption = Annotated[
    str | None,
    typer.Option(
        help="Your organisation's ODS code, e.g. RTR: the provider that submitted the invoice "
        "(a development token is minted for it).",
        metavar="ODS_CODE",
        show_default=False,
    ),
]


_problem = problem_text


def _all_lines(client: httpx.Client, invoice_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 5000}
        if cursor:
            params["cursor"] = cursor
        r = call(client, "GET", f"/v1/invoices/{invoice_id}/lines", params=params)
        if r.status_code != 200:
            fail(_problem(r))
        page = r.json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def _print_invoice(invoice: dict[str, Any]) -> None:
    s = invoice["summary"]
    # One fact per line, so that nothing wraps in 80 columns but a long failure reason.
    parties = f"{invoice['provider_code']} → {invoice['commissioner_code']}"
    out.print(
        f"[bold]{invoice['invoice_number']}[/] ({parties}): [bold]{invoice['status']}[/]", highlight=False
    )
    out.print(f"  id {invoice['id']}", highlight=False)
    out.print(
        f"  lines {s['lines']}: [green]{s['valid']} valid[/], [yellow]{s['query']} query[/], "
        f"[red]{s['rejected']} rejected[/]",
        highlight=False,
    )
    out.print(f"  claimed £{s['claimed_amount']}, validated £{s['validated_amount']}", highlight=False)
    if invoice.get("failure_reason"):
        out.print(f"  {invoice['failure_reason']}", style="red", highlight=False, markup=False)


def _line_label(item: dict[str, Any], position: int) -> str:
    """The line's own line_ref; a line whose line_ref cell was empty is named by its data row
    (1 = the first row after the header), which is what the provider can find in the file."""
    if item.get("line_ref") is not None:
        return str(item["line_ref"])
    return f"(row {item.get('line_no', position)})"


def _print_lines(items: list[dict[str, Any]], shown: int, *, staff: bool = False) -> None:
    reasons = Counter(r for i in items for r in i["reasons"])
    if reasons:
        said = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        out.print(
            textwrap.fill(f"reasons: {said}", COLUMNS - 1, initial_indent="  ", subsequent_indent="    ")
        )
    # Fits 80 columns: reasons wrap between codes inside their cell, the other columns need not.
    table = new_table(title=f"first {min(shown, len(items))} of {len(items)} lines")
    table.add_column("line_ref", overflow="fold")
    table.add_column("outcome", no_wrap=True)
    if staff:
        # Query lines only: the staff's decision on them (NULL is a query not yet worked on).
        table.add_column("state", overflow="fold")
    table.add_column("reasons", ratio=1, overflow="fold", min_width=reasons_width(list(reasons)))
    # The responsible commissioner: who pays for the line (a 3-character code, a short head).
    table.add_column("payer", no_wrap=True)
    table.add_column("expected £", justify="right", no_wrap=True)
    from rich.markup import escape

    colour = {"valid": "green", "query": "yellow", "rejected": "red"}
    # Lines come in file order, so a line's position is its data row.
    for position, item in enumerate(items[:shown], 1):
        state = [(item.get("state") or "query") if item["outcome"] == "query" else ""] if staff else []
        table.add_row(
            escape(_line_label(item, position)),
            f"[{colour.get(item['outcome'], 'white')}]{item['outcome']}[/]",
            *state,
            ", ".join(item["reasons"]),
            item.get("responsible_commissioner") or "",
            item.get("expected_amount") or "",
        )
    print_table(table)


def submit(
    invoice: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The invoice header (JSON).")],
    backing_data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The backing data (CSV).")
    ],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until validated.")] = True,
    lines: Annotated[int, typer.Option(help="How many line outcomes to show.")] = SHOWN_LINES,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Makes a retry return the first result.")
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Submit an invoice as its provider; print its summary and lines.

    Waits until it is validated (unless --no-wait), then prints each line's outcome; a line whose
    line_ref cell was empty is shown as (row N), its data row in the backing file."""
    try:
        header = json.loads(invoice.read_bytes())
        provider = str(header["provider_code"]).strip().upper()
    except (ValueError, KeyError, TypeError):
        fail(f"{invoice} is not an invoice header: a JSON object with provider_code is needed")
        return
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with (
        api_client(data_dir, role="provider", org=provider) as client,
        invoice.open("rb") as h,
        backing_data.open("rb") as b,
    ):
        r = call(
            client,
            "POST",
            "/v1/invoices",
            files={
                "invoice": (invoice.name, h, "application/json"),
                "backing_data": (backing_data.name, b, "text/csv"),
            },
            headers=headers,
        )
        if r.status_code not in (201, 202):
            fail(f"the invoice was refused: {_problem(r)}")
        body = r.json()
        if wait:
            with console.status("validating…") as status:
                while body["status"] in ("received", "validating"):
                    time.sleep(0.5)
                    status.update(f"validating… {body.get('lines_done', 0)} lines")
                    body = call(client, "GET", f"/v1/invoices/{body['id']}").json()
        _print_invoice(body)
        if body["status"] not in ("received", "validating", "failed"):
            _print_lines(_all_lines(client, body["id"]), lines)
        again = command_line(
            ["invoices", "show", body["id"], "--org", provider, *data_dir_args(data_dir)],
            env_prefix=service_env("cef-api"),
        )
        out.print(f"\nSee it again with:\n{again}", soft_wrap=True, highlight=False, markup=False)
        if body["status"] == "failed":
            raise typer.Exit(1)


def purge(
    older_than: Annotated[
        int, typer.Option("--older-than", min=0, help="Days since the invoice was closed.")
    ],
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Remove line-level patient tokens of old closed invoices.

    Invoices closed more than --older-than days ago keep their summaries and line outcomes."""
    from cef_api.config import Settings
    from cef_api.invoices.service import purge as purge_invoices
    from cef_common import db
    from cef_common.auth import Principal

    settings = Settings(data_dir=data_dir)
    engine = db.make_engine(settings.effective_database_url)
    try:
        who = Principal(sub="cef-purge", issuer="cef-cli", scopes=frozenset(), client="cef-cli")
        result = purge_invoices(engine, older_than_days=older_than, principal=who)
    finally:
        engine.dispose()
    out.print(f"purged line-level tokens of {result['invoices']} invoice(s), {result['lines']} line(s)")


invoices_app = group("Invoices of the local CEF API: list, show, export, approve, withdraw.")

AsOption = Annotated[
    Role,
    typer.Option(
        "--as", help="Who you are: the invoice's provider, CEF staff or finance of its commissioner."
    ),
]
LineAsOption = Annotated[
    LineRole,
    typer.Option("--as", help="Who you are: the invoice's provider or CEF staff of its commissioner."),
]
RoleOrgOption = Annotated[
    str,
    typer.Option(
        help="Your organisation's ODS code: the provider's (e.g. RTR) as a provider, the "
        "commissioner's (e.g. 00C) as staff or finance.",
        metavar="ODS_CODE",
        show_default=False,
    ),
]


def _list_args(role: str, org: str) -> list[str]:
    """`--as ROLE --org ORG`, leaving out the default role."""
    return [*([] if role == "provider" else ["--as", role]), "--org", org_code(org)]


@invoices_app.command("list")
def list_invoices(
    org: RoleOrgOption,
    as_: AsOption = Role.provider,
    status: Annotated[
        str | None,
        typer.Option(help="Only invoices in this status (e.g. validated, approved, part-paid, paid)."),
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """List the invoices you may see (every page): a provider its own, staff and finance their
    commissioner's.

    For example:

    \b
      cef invoices list --org RVW
      cef invoices list --as staff --org 00C --status validated"""
    role = as_.value
    with api_client(data_dir, role=role, org=org) as client:
        items, _ = all_pages(client, "/v1/invoices", what="invoices", params={"status": status, "limit": 500})
    if not items:
        out.print(f"no invoices{f' with status {status}' if status else ''}", highlight=False)
        if role == "provider":
            print_next("Submit one with:", ["submit", "INVOICE.json", "BACKING.csv"], data_dir)
        return
    from rich.text import Text

    shown = new_table(title=f"{len(items)} invoice(s)")
    shown.add_column("invoice / id", no_wrap=True)
    # A status is never broken: the columns of numbers fold first.
    shown.add_column("status", no_wrap=True, min_width=max(len(i["status"]) for i in items))
    shown.add_column("lines", justify="right", no_wrap=True)
    shown.add_column("query", justify="right", no_wrap=True)
    shown.add_column("claimed £\napproved £", justify="right", no_wrap=True)
    for item in items:
        s = item["summary"]
        who = f"{item['provider_code']}→{item['commissioner_code']}"
        shown.add_row(
            Text(f"{item['invoice_number']} {who}\n{item['id']}"),
            item["status"],
            str(s["lines"]),
            str(s["query"]),
            f"{s['claimed_amount']}\n{money_cell(item.get('approved_amount'))}",
        )
    print_table(shown)
    first = items[0]
    print_next(
        f"Show {first['invoice_number']} with:",
        ["invoices", "show", first["id"], *_list_args(role, org)],
        data_dir,
    )


def _print_payments(client: httpx.Client, invoice_id: str) -> None:
    r = call(client, "GET", f"/v1/invoices/{segment(invoice_id)}/payments")
    if r.status_code != 200:
        return
    payments = r.json().get("items") or []
    if not payments:
        out.print("  no payments recorded", highlight=False)
        return
    from rich.text import Text

    shown = new_table(title="payments")
    for column in ("paid on", "reference", "amount £", "recorded by"):
        shown.add_column(column, overflow="fold")
    for p in payments:
        shown.add_row(str(p["paid_on"]), Text(p["reference"]), p["amount"], Text(p["recorded_by"]))
    print_table(shown)


@invoices_app.command("show")
def show(
    invoice_id: Annotated[
        str, typer.Argument(metavar="ID", help="The invoice's id, as `cef submit` printed it.")
    ],
    org: OrgOption = None,
    as_: AsOption = Role.provider,
    lines: Annotated[int, typer.Option(help="How many line outcomes to show.")] = SHOWN_LINES,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Show one invoice: its summary, then its lines (a provider their outcomes, CEF staff also
    each query line's state) and what each reason shown means; finance see the payments.

    For example (ID as `cef invoices list` shows it):

    \b
      cef invoices show ID --org RTR
      cef invoices show ID --as staff --org 00C"""
    if not org:
        # A token always names its organisation; the CLI cannot know which provider you are.
        fail(
            "--org is needed: the ODS code of the provider that submitted the invoice, e.g. "
            f"`{command_line(['invoices', 'show', invoice_id, '--org', 'RTR', *data_dir_args(data_dir)])}`",
            code=2,
        )
        return
    role = as_.value
    with api_client(data_dir, role=role, org=org) as client:
        r = call(client, "GET", f"/v1/invoices/{segment(invoice_id)}")
        if r.status_code != 200:
            fail(_problem(r))
        invoice = r.json()
        _print_invoice(invoice)
        if invoice.get("ledger_reference"):
            paid = f", paid £{invoice.get('paid_amount', '0.00')}"
            out.print(f"  ledger {invoice['ledger_reference']}{paid}", highlight=False, markup=False)
        if invoice.get("withdraw_reason"):
            out.print(wrapped(f"withdrawn: {invoice['withdraw_reason']}"), highlight=False, markup=False)
        if role == "finance":
            _print_payments(client, invoice_id)
        elif invoice["status"] not in ("received", "validating", "failed"):
            items = _all_lines(client, invoice_id)
            _print_lines(items, lines, staff=role == "staff")
            explain_reasons([c for i in items for c in i["reasons"]], reason_catalogue(client))
    status, here = invoice["status"], _list_args(role, org)
    if role == "staff" and status == "validated":
        print_next(
            "Its query lines:", ["queries", "list", "--org", org_code(org), "--invoice", invoice_id], data_dir
        )
    elif role == "provider" and status == "validated" and invoice["summary"]["query"]:
        print_next(
            "Challenges of your query lines:", ["challenges", "list", "--org", org_code(org)], data_dir
        )
    elif role != "provider" and status in ("approved", "part-approved", "part-paid"):
        print_next("Invoices to pay:", ["finance", "approved", "--org", org_code(org)], data_dir)
    else:
        print_next("Your other invoices:", ["invoices", "list", *here], data_dir)


@invoices_app.command("withdraw")
def withdraw(
    invoice_id: Annotated[str, typer.Argument(metavar="ID", help="The invoice's id.")],
    org: Annotated[
        str, typer.Option(help="Your provider's ODS code, e.g. RTR.", metavar="ODS_CODE", show_default=False)
    ],
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, for the commissioner (at most 500 characters; no NHS number, date or postcode)."
        ),
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Withdraw a validated invoice before it is approved (its provider only): it is neither
    decided nor paid, and its lines stop counting as earlier lines.

    For example:

    \b
      cef invoices withdraw ID --reason "sent to the wrong ICB" --org RTR"""
    with api_client(data_dir, role="provider", org=org) as client:
        with console.status("withdrawing…"):
            body = {"reason": reason} if reason else {}
            invoice = expect(call(client, "POST", f"/v1/invoices/{segment(invoice_id)}/withdraw", json=body))
    _print_invoice(invoice)
    print_next("Your invoices:", ["invoices", "list", "--org", org_code(org)], data_dir)


def _problem_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("code")) if isinstance(body, dict) and body.get("code") else None


def _file_name(invoice_number: str, suffix: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", invoice_number).strip("._") or "invoice"
    return Path(f"{safe}-{suffix}.csv")


@invoices_app.command("export")
def export(
    invoice_id: Annotated[str, typer.Argument(metavar="ID", help="The invoice's id.")],
    org: RoleOrgOption,
    as_: LineAsOption = LineRole.provider,
    output: Annotated[
        Path | None,
        typer.Option(
            help="The CSV file to write (default: INVOICE_NUMBER-outcomes.csv for a provider, "
            "INVOICE_NUMBER-detail.csv for staff).",
            dir_okay=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the file if it exists.")] = False,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Save every line of an invoice as CSV: a provider gets the outcomes, CEF staff the detail
    (with patient tokens; the read is audited).

    For example:

    \b
      cef invoices export ID --org RTR
      cef invoices export ID --as staff --org 00C --output lines.csv"""
    role = as_.value
    with api_client(data_dir, role=role, org=org) as client:
        invoice = expect(call(client, "GET", f"/v1/invoices/{segment(invoice_id)}"))
        target = output or _file_name(
            invoice["invoice_number"], "outcomes" if role == "provider" else "detail"
        )
        if target.exists() and not force:
            fail(
                f"{shown_path(target)} exists: pass --force to overwrite it, or --output another file", code=2
            )
        size, rows = download(
            client,
            f"/v1/invoices/{segment(invoice_id)}/lines",
            output=target,
            total_lines=invoice["summary"]["lines"],
        )
    out.print(f"wrote {rows} line(s), {size} bytes, to {shown_path(target)}", highlight=False, markup=False)
    if role == "staff":
        print_next(
            "Its query lines:", ["queries", "list", "--org", org_code(org), "--invoice", invoice_id], data_dir
        )
    else:
        print_next("Your challenges to answer:", ["challenges", "list", "--org", org_code(org)], data_dir)


@invoices_app.command("approve")
def approve(
    invoice_id: Annotated[str, typer.Argument(metavar="ID", help="The invoice's id.")],
    org: Annotated[
        str,
        typer.Option(help="Your commissioner's ODS code, e.g. 00C.", metavar="ODS_CODE", show_default=False),
    ],
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Approve a validated invoice whose query lines are all decided (CEF staff of its
    commissioner): it gets its ledger reference and goes to finance.

    For example:

    \b
      cef invoices approve ID --org 00C"""
    with api_client(data_dir, role="staff", org=org) as client:
        with console.status("approving…"):
            r = call(client, "POST", f"/v1/invoices/{segment(invoice_id)}/approve")
    if r.status_code != 200:
        if _problem_code(r) == "queries-pending":
            print_next(
                "Lines still to decide:",
                ["queries", "list", "--org", org_code(org), "--invoice", invoice_id],
                data_dir,
            )
        fail(problem_text(r))
    invoice = r.json()
    _print_invoice(invoice)
    out.print(
        f"  approved £{invoice.get('approved_amount')}, ledger {invoice.get('ledger_reference')}",
        highlight=False,
        markup=False,
    )
    print_next("Finance sees it with:", ["finance", "approved", "--org", org_code(org)], data_dir)


def register(app: typer.Typer) -> None:
    """Adds the invoice commands to the top-level app."""
    app.command("submit")(submit)
    app.command("purge")(purge)
    app.add_typer(invoices_app, name="invoices")
