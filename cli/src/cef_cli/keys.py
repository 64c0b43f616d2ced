"""`cef keys`: list and rotate the tokeniser's data keys, directly on its database.

Settings come from the environment (CEF_TOKENISER_*), as the tokeniser reads them; without a
master key setting, the development key `cef up` keeps under the data directory is used."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cef_cli.common import DataDirOption, console, fail, group, out, print_table, table

if TYPE_CHECKING:
    from cef_tokeniser.config import Settings

app = group("The tokeniser's data keys: list versions, rotate.")


class KindChoice(StrEnum):
    nhs_number = "nhs_number"
    date_of_birth = "date_of_birth"
    postcode = "postcode"


def _settings(data_dir: Path) -> Settings:
    from pydantic import ValidationError

    from cef_tokeniser.config import Settings

    try:
        return Settings(data_dir=data_dir)
    except ValidationError as exc:
        fail(f"tokeniser settings: {exc.errors()[0].get('msg', exc)}")
        raise  # unreachable: fail() exits


@app.command()
def rotate(
    kind: Annotated[KindChoice, typer.Option("--kind", help="Which kind of identifier.")],
    context: Annotated[
        str | None, typer.Option("--context", help="The context (default: the tokeniser's default_context).")
    ] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Add a key version for KIND in CONTEXT.

    New tokens use it; tokens of older versions still resolve.

    Afterwards, POST /v1/retokenise maps stored tokens to the new version."""
    from cef_tokeniser.keys import KeyStoreError, rotate_data_key

    settings = _settings(data_dir)
    try:
        info = rotate_data_key(settings, kind=kind.value, context=context)
    except KeyStoreError as exc:
        fail(str(exc))
        return
    console.print(f"{info.kind} in context {info.context}: new tokens now use key version {info.version}")
    out.print(str(info.version), highlight=False)


@app.command("list")
def list_(data_dir: DataDirOption = Path("var")) -> None:
    """List the key versions of every kind and context (never the keys)."""
    from cef_tokeniser.keys import KeyStoreError, list_data_keys

    settings = _settings(data_dir)
    try:
        versions = list_data_keys(settings)
    except KeyStoreError as exc:
        fail(str(exc))
        return
    if not versions:
        console.print("no data keys yet: the first tokenise call of a kind and context creates version 1")
        return
    shown = table("kind", "context", "version", "current", "created at", "master key")
    for column in shown.columns[:5]:
        column.no_wrap = True
    for v in versions:
        shown.add_row(
            v.kind,
            v.context,
            str(v.version),
            "yes" if v.current else "",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.master_key_id,
        )
    print_table(shown)
