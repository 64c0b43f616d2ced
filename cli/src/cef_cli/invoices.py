"""`cef submit`, `cef invoices ...` and `cef purge`: invoices of the local CEF API."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cef_cli.common import DataDirOption, console, fail, local_token, out, service_url

SHOWN_LINES = 20


def _client(token: str) -> httpx.Client:
    return httpx.Client(
        base_url=service_url("cef-api"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(600, connect=5),
    )


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    detail = f"HTTP {response.status_code}: {body.get('detail', body.get('title', ''))}"
    extra = [f"\n  {e.get('field')}: {e.get('message')}" for e in body.get("errors", [])[:10] if "field" in e]
    where = f" (line {body['line']})" if "line" in body else ""
    return detail + where + "".join(extra)


def _all_lines(client: httpx.Client, invoice_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 5000}
        if cursor:
            params["cursor"] = cursor
        r = client.get(f"/v1/invoices/{invoice_id}/lines", params=params)
        if r.status_code != 200:
            fail(_problem(r))
        page = r.json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def _print_invoice(invoice: dict[str, Any]) -> None:
    s = invoice["summary"]
    out.print(
        f"[bold]{invoice['invoice_number']}[/] ({invoice['provider_code']} → {invoice['commissioner_code']}) "
        f"status [bold]{invoice['status']}[/]  id {invoice['id']}"
    )
    out.print(
        f"  lines {s['lines']}: [green]{s['valid']} valid[/], [yellow]{s['query']} query[/], "
        f"[red]{s['rejected']} rejected[/]; "
        f"claimed £{s['claimed_amount']}, validated £{s['validated_amount']}"
    )
    if invoice.get("failure_reason"):
        out.print(f"  [red]{invoice['failure_reason']}[/]")


def _print_lines(items: list[dict[str, Any]], shown: int) -> None:
    reasons = Counter(r for i in items for r in i["reasons"])
    if reasons:
        out.print("  reasons: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
    table = Table(title=f"first {min(shown, len(items))} of {len(items)} lines")
    for column in ("line_ref", "outcome", "reasons", "responsible", "expected £"):
        table.add_column(column)
    colour = {"valid": "green", "query": "yellow", "rejected": "red"}
    for item in items[:shown]:
        table.add_row(
            str(item["line_ref"]),
            f"[{colour.get(item['outcome'], 'white')}]{item['outcome']}[/]",
            ", ".join(item["reasons"]),
            item.get("responsible_commissioner") or "",
            item.get("expected_amount") or "",
        )
    out.print(table)


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
    """Submit an invoice as its provider and print its summary and line outcomes."""
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
        try:
            r = client.post(
                "/v1/invoices",
                files={
                    "invoice": (invoice.name, h, "application/json"),
                    "backing_data": (backing_data.name, b, "text/csv"),
                },
                headers=headers,
            )
        except httpx.HTTPError as exc:
            fail(f"the CEF API did not answer ({type(exc).__name__}): is `cef up` running?")
            return
        if r.status_code not in (201, 202):
            fail(f"the invoice was refused: {_problem(r)}")
        body = r.json()
        if wait:
            with console.status("validating…") as status:
                while body["status"] in ("received", "validating"):
                    time.sleep(0.5)
                    status.update(f"validating… {body.get('lines_done', 0)} lines")
                    body = client.get(f"/v1/invoices/{body['id']}").json()
        _print_invoice(body)
        if body["status"] not in ("received", "validating", "failed"):
            _print_lines(_all_lines(client, body["id"]), lines)
        if body["status"] == "failed":
            raise typer.Exit(1)


def purge(
    older_than: Annotated[
        int, typer.Option("--older-than", min=0, help="Days since the invoice was closed.")
    ],
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Remove line-level patient tokens of closed invoices older than DAYS (summaries and outcomes stay)."""
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


invoices_app = typer.Typer(help="Invoices of the local CEF API.", no_args_is_help=True)


@invoices_app.command("show")
def show(
    invoice_id: str,
    org: Annotated[str, typer.Option(help="The provider's ODS code (the caller's organisation).")],
    lines: Annotated[int, typer.Option(help="How many line outcomes to show.")] = SHOWN_LINES,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Show one invoice as its provider sees it."""
    token = local_token(data_dir, scope="invoices:submit", audience="cef-api", org=org.upper())
    with _client(token) as client:
        r = client.get(f"/v1/invoices/{invoice_id}")
        if r.status_code != 200:
            fail(_problem(r))
        _print_invoice(r.json())
        _print_lines(_all_lines(client, invoice_id), lines)


def register(app: typer.Typer) -> None:
    """Adds the invoice commands to the top-level app."""
    app.command("submit")(submit)
    app.command("purge")(purge)
    app.add_typer(invoices_app, name="invoices")
