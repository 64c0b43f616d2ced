"""What every `cef` subcommand shares: the data directory, local service URLs, dev tokens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cef_common.auth import mint_dev_token

console = Console(stderr=True)
out = Console()

DEFAULT_DATA_DIR = Path(os.environ.get("CEF_DATA_DIR", "var"))

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="The data directory of the local `cef up` (env CEF_DATA_DIR).",
        file_okay=False,
        resolve_path=True,
    ),
]

SERVICES = ("tokeniser", "cef-api", "audit")


def service_url(service: str) -> str:
    """Where the local service listens: the settings' port, or an explicit *_URL override."""
    env = {"tokeniser": "CEF_TOKENISER", "cef-api": "CEF_API", "audit": "CEF_AUDIT"}[service]
    explicit = os.environ.get(f"{env}_PUBLIC_URL")
    if explicit:
        return explicit.rstrip("/")
    port = os.environ.get(f"{env}_PORT") or {"tokeniser": "8001", "cef-api": "8002", "audit": "8003"}[service]
    return f"http://127.0.0.1:{port}"


def local_token(
    data_dir: Path, *, scope: str, audience: str, org: str | None = None, sub: str = "developer"
) -> str:
    """A token from the development issuer of the `cef up` using `data_dir`."""
    try:
        return mint_dev_token(data_dir / "keys", scopes=scope.split(), audience=audience, sub=sub, org=org)
    except FileNotFoundError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers content


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
