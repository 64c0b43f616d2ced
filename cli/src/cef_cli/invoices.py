"""`cef submit` and invoice commands."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the invoice commands to the top-level app."""
