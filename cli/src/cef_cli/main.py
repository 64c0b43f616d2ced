"""The `cef` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cef_cli import (
    audit,
    challenges,
    finance,
    invoices,
    keys,
    queries,
    reasons,
    reference,
    reidentify,
    reports,
    worker,
)
from cef_cli.common import SERVICES, DataDirOption, out
from cef_cli.up import up

app = typer.Typer(
    help="Controlled Environment for Finance: run, feed and inspect the CEF.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: rich's help formatting alone doubles the start-up time of every command.
    rich_markup_mode=None,
)
app.command("up")(up)
app.add_typer(reference.app, name="reference")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
invoices.register(app)
app.add_typer(queries.app, name="queries")
app.add_typer(challenges.app, name="challenges")
app.add_typer(finance.app, name="finance")
app.add_typer(reports.app, name="reports")
app.command("reasons")(reasons.reasons)
app.command("worker")(worker.worker)
reidentify.register(audit=audit.app, invoices=invoices.invoices_app)


@app.command()
def token(
    scope: Annotated[str, typer.Option(help="Space-separated scopes, e.g. 'invoices:submit'.")],
    org: Annotated[str | None, typer.Option(help="ODS code of the caller's organisation.")] = None,
    sub: Annotated[str, typer.Option(help="Who the token is for.")] = "developer",
    aud: Annotated[
        str, typer.Option(help=f"The service it is for: one of {', '.join(SERVICES)}.")
    ] = "cef-api",
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Print a development token (`cef up`'s issuer).

    The token is the last line of the output."""
    from cef_cli.common import fail, local_token

    if aud not in SERVICES:
        fail(f"--aud must be one of {', '.join(SERVICES)}")
    # Plain print: the token must be one unbroken line, and rich is not worth importing for it.
    print(local_token(data_dir, scope=scope, audience=aud, org=org, sub=sub))


@app.command()
def migrate(
    service: Annotated[list[str] | None, typer.Option(help="Only this service (repeatable).")] = None,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Apply each service's database migrations.

    Each service's settings (its database URL) come from the environment."""
    from cef_cli.up import _services
    from cef_common import db

    for run in _services(data_dir):
        if service and run.name not in service:
            continue
        db.upgrade(run.migrations, run.settings.effective_database_url)
        out.print(f"{run.name}: migrated to head")


if __name__ == "__main__":
    app()
