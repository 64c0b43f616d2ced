"""`cef reference` commands."""

import typer

app = typer.Typer(help="reference", no_args_is_help=True)
