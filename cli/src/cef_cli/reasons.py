"""`cef reasons`: every reason code a line can carry, what it means and what to do about it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cef_cli.common import (
    DataDirOption,
    Role,
    api_client,
    call,
    console,
    expect,
    org_code,
    out,
    print_next,
    wrapped,
)


def reasons(
    org: Annotated[
        str,
        typer.Option(
            help="Your organisation's ODS code (any role may read the catalogue).",
            metavar="ODS_CODE",
            show_default=False,
        ),
    ] = "RTR",
    as_: Annotated[Role, typer.Option("--as", help="Who you are (any role).")] = Role.provider,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Explain every reason code a line can carry: its outcome (rejected, or query for a person
    to resolve), what it means and what to do.

    For example:

    \b
      cef reasons
      cef reasons --as staff --org 00C"""
    with api_client(data_dir, role=as_.value, org=org) as client, console.status("fetching reasons…"):
        items = expect(call(client, "GET", "/v1/reasons"))["items"]
    for item in items:
        out.print(f"\n{item['code']} ({item['outcome']})", style="bold", highlight=False, markup=False)
        out.print(wrapped(item["summary"]), highlight=False, markup=False)
        out.print(wrapped(f"What to do: {item['action']}"), highlight=False, markup=False)
    role = [] if as_ is Role.provider else ["--as", as_.value]
    print_next(
        "Your invoices and their lines:", ["invoices", "list", *role, "--org", org_code(org)], data_dir
    )
