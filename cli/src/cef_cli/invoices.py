"""`cef submit`, `cef invoices ...` and `cef purge`: invoices of the local CEF API."""

from __future__ import annotations

import json
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cef_cli.common import (
    COLUMNS,
    DataDirOption,
    call,
    command_line,
    console,
    data_dir_args,
    fail,
    group,
    local_token,
    out,
    print_table,
    problem_text,
    service_env,
    service_url,
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


def _client(token: str) -> httpx.Client:
    import httpx

    return httpx.Client(
        base_url=service_url("cef-api"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(600, connect=5),
    )


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


def _print_lines(items: list[dict[str, Any]], shown: int) -> None:
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
    table.add_column("reasons", ratio=1, overflow="fold")
    table.add_column("responsible", no_wrap=True)
    table.add_column("expected £", justify="right", no_wrap=True)
    from rich.markup import escape

    colour = {"valid": "green", "query": "yellow", "rejected": "red"}
    # Lines come in file order, so a line's position is its data row.
    for position, item in enumerate(items[:shown], 1):
        table.add_row(
            escape(_line_label(item, position)),
            f"[{colour.get(item['outcome'], 'white')}]{item['outcome']}[/]",
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
    token = local_token(
        data_dir, scope="invoices:submit", audience="cef-api", org=provider, sub=f"{provider}-submitter"
    )
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _client(token) as client, invoice.open("rb") as h, backing_data.open("rb") as b:
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


invoices_app = group("Invoices of the local CEF API.")


@invoices_app.command("show")
def show(
    invoice_id: Annotated[
        str, typer.Argument(metavar="ID", help="The invoice's id, as `cef submit` printed it.")
    ],
    org: OrgOption = None,
    lines: Annotated[int, typer.Option(help="How many line outcomes to show.")] = SHOWN_LINES,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Show one invoice as its provider sees it.

    For example: cef invoices show ID --org RTR (the provider's ODS code)."""
    if not org:
        # A token always names its organisation; the CLI cannot know which provider you are.
        fail(
            "--org is needed: the ODS code of the provider that submitted the invoice, e.g. "
            f"`{command_line(['invoices', 'show', invoice_id, '--org', 'RTR', *data_dir_args(data_dir)])}`",
            code=2,
        )
        return
    token = local_token(data_dir, scope="invoices:submit", audience="cef-api", org=org.strip().upper())
    with _client(token) as client:
        r = call(client, "GET", f"/v1/invoices/{invoice_id}")
        if r.status_code != 200:
            fail(_problem(r))
        _print_invoice(r.json())
        _print_lines(_all_lines(client, invoice_id), lines)


def register(app: typer.Typer) -> None:
    """Adds the invoice commands to the top-level app."""
    app.command("submit")(submit)
    app.command("purge")(purge)
    app.add_typer(invoices_app, name="invoices")
