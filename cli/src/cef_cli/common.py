"""What every `cef` subcommand shares: the data directory, local service URLs, dev tokens.

Kept light on purpose: every command imports this module, so it imports nothing beyond typer
(rich on first use; `local_token` mints with `cef_common.devtokens`: python-jose, cryptography).
A command imports httpx, FastAPI, SQLAlchemy or a service's package inside its own function, so
`cef --help` and `cef token` stay quick (tests/test_cli_startup.py watches this)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    import httpx
    from rich.console import Console
    from rich.table import Table


class _LazyConsole:
    """A rich Console made on first use: importing rich costs every command, even `--help`."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    # Special methods are looked up on the type, never through __getattr__; rich's Progress and
    # Live enter the console they are given.
    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._real().__exit__(*exc)


console = cast("Console", _LazyConsole(stderr=True))
out = cast("Console", _LazyConsole(stderr=False))


def group(help: str) -> typer.Typer:
    """A group of subcommands (`cef audit …`), with the plain help of the top-level app."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


DEFAULT_DATA_DIR = Path(os.environ.get("CEF_DATA_DIR", "var"))

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="The data directory of the local `cef up`.",
        envvar="CEF_DATA_DIR",
        file_okay=False,
        resolve_path=True,
    ),
]

SERVICES = ("tokeniser", "cef-api", "audit")


ENV_PREFIXES = {"tokeniser": "CEF_TOKENISER", "cef-api": "CEF_API", "audit": "CEF_AUDIT"}
DEFAULT_PORTS = {"tokeniser": "8001", "cef-api": "8002", "audit": "8003"}


def service_url(service: str) -> str:
    """Where the local service listens: the settings' port, or an explicit *_URL override."""
    env = ENV_PREFIXES[service]
    explicit = os.environ.get(f"{env}_PUBLIC_URL")
    if explicit:
        return explicit.rstrip("/")
    port = os.environ.get(f"{env}_PORT") or DEFAULT_PORTS[service]
    return f"http://127.0.0.1:{port}"


def service_env(service: str) -> str:
    """The setting another shell needs to reach `service` as this command did (`CEF_API_PORT=8012`),
    or "" when it listens where it does by default."""
    env = ENV_PREFIXES[service]
    explicit = os.environ.get(f"{env}_PUBLIC_URL")
    if explicit:
        return f"{env}_PUBLIC_URL={shlex.quote(explicit)}"
    port = os.environ.get(f"{env}_PORT")
    return f"{env}_PORT={shlex.quote(port)}" if port and port != DEFAULT_PORTS[service] else ""


def local_token(
    data_dir: Path, *, scope: str, audience: str, org: str | None = None, sub: str = "developer"
) -> str:
    """A token from the development issuer of the `cef up` using `data_dir`."""
    from cef_common.devtokens import mint_dev_token

    try:
        return mint_dev_token(data_dir / "keys", scopes=scope.split(), audience=audience, sub=sub, org=org)
    except FileNotFoundError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers content


def fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    # A service's detail may hold square brackets: they are text, not rich markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


MAX_SHOWN_ERRORS = 10


def _where(error: dict[str, Any]) -> str:
    if error.get("line") is not None:
        return f"line {error['line']}" + (f", column {error['column']}" if error.get("column") else "")
    return str(error.get("field") or "")


def _mentions(detail: str, what: str) -> bool:
    # Whole words only: an error at "line 2" is not the one the detail names at "line 20".
    return re.search(rf"(?<![\w.]){re.escape(what)}(?!\w)", detail, re.IGNORECASE) is not None


def problem_text(response: httpx.Response) -> str:
    """An error response as one readable text: its detail once, then only those of its `errors`
    that add something (the detail usually already quotes the first one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}: {response.text[:300]}"
    detail = str(body.get("detail") or body.get("title") or "")
    text = f"HTTP {response.status_code}: {detail}"
    if body.get("line") is not None and f"line {body['line']}" not in detail:
        text += f" (line {body['line']})"
    extra: list[str] = []
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    for error in errors:
        where, message = _where(error), str(error.get("message") or "")
        said = f"{where}: {message}" if where else message
        if not message or said in extra or _mentions(detail, where or message):
            continue
        extra.append(said)
    for said in extra[:MAX_SHOWN_ERRORS]:
        text += f"\n  {said}"
    # Problems the service counted but did not list, and those listed but not shown here.
    total = body.get("error_count")
    unlisted = total - len(errors) if isinstance(total, int) and total > len(errors) else 0
    hidden = unlisted + max(0, len(extra) - MAX_SHOWN_ERRORS)
    if hidden:
        text += f"\n  … and {hidden} more"
    return text


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request of a command; a service that does not answer ends the command with a message
    saying what to do, never a traceback."""
    import httpx

    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(
            f"nothing answered at {client.base_url} ({type(exc).__name__}): "
            "is `cef up` running, on the ports this shell's CEF_*_PORT settings name?",
            code=UNREACHABLE,
        )
        raise  # unreachable: fail() exits


# Exit status of a command whose service did not answer (documented in the README).
UNREACHABLE = 3

# What terminals are assumed to be: tables and printed commands fit in this many columns.
COLUMNS = 80


def table(*columns: str, title: str | None = None) -> Table:
    """A table for print_table(): only its head is ruled, to leave the room to the values, and its
    cells fold rather than lose their end."""
    from rich import box
    from rich.table import Table

    shown = Table(*columns, title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in shown.columns:
        column.overflow = "fold"
    return shown


def print_table(shown: Table) -> None:
    """Prints a table in no more than COLUMNS (or the terminal's width): its cells wrap instead."""
    out.print(shown, width=min(out.width, COLUMNS))


def shown_path(path: Path) -> str:
    """A path as a user would type it from here: relative when under the working directory."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cli_prefix() -> str:
    """How this machine runs `cef` from the working directory: the script beside this interpreter
    (`.venv/bin/cef` in a checkout after `make up`), else this interpreter with `-m cef_cli.main`.
    Never a bare `cef` or `uv run`: `make up` runs under `uv run`, which puts the venv on the PATH
    of `cef up` but not of the shell the user pastes into."""
    beside = Path(sys.executable).with_name("cef")
    if beside.is_file():
        where = shown_path(beside)
        return where if "/" in where else f"./{where}"
    return f"{shlex.quote(sys.executable)} -m cef_cli.main"


def data_dir_args(data_dir: Path) -> list[str]:
    return ["--data-dir", shown_path(data_dir)]


def command_line(args: list[str], indent: str = "", env_prefix: str = "") -> str:
    """`cef ARGS` as the user can paste it: the command that runs here (after `env_prefix`, e.g.
    `CEF_API_PORT=8012`), each argument quoted for the shell, broken with backslashes to fit
    COLUMNS."""
    continued = indent + "    "
    words = [f"{env_prefix} {cli_prefix()}".strip()]
    for arg in args:
        pair = f"{words[-1]} {shlex.quote(arg)}"
        # An option stays on one line with its value, where the two fit on one.
        if len(words) > 1 and words[-1].startswith("--") and not arg.startswith("--"):
            if len(continued) + len(pair) + 2 <= COLUMNS:
                words[-1] = pair
                continue
        words.append(shlex.quote(arg))
    lines, current = [], indent + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) + 2 > COLUMNS:
            lines.append(current + " \\")
            current = continued + word
        else:
            current += " " + word
    lines.append(current)
    return "\n".join(lines)
