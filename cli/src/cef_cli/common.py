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
from enum import StrEnum
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


ENV_PREFIXES = {"tokeniser": "CEF_TOKENISER", "cef-api": "CEF_API", "audit": "CEF_AUDIT", "web": "CEF_WEB"}
DEFAULT_PORTS = {"tokeniser": "8001", "cef-api": "8002", "audit": "8003", "web": "8000"}


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
    # The setting and the command are two words: where both do not fit, a backslash joins them
    # (`VAR=x \` then the command) and the shell still applies the setting to the command.
    words = [env_prefix, cli_prefix()] if env_prefix else [cli_prefix()]
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


# --- the roles of the invoice lifecycle (docs/cli.md) ---------------------------------------------

# The scope a development token carries for each role; its org is the provider (trust) code for a
# provider, the commissioner's code for every other role.
ROLE_SCOPES = {
    "provider": "invoices:submit",
    "staff": "invoices:validate",
    "finance": "invoices:read",
    "board": "reports:read",
}


class Role(StrEnum):
    """`--as` of a command several roles may use."""

    provider = "provider"
    staff = "staff"
    finance = "finance"


class LineRole(StrEnum):
    """`--as` of a command that reads lines: finance never sees line-level data."""

    provider = "provider"
    staff = "staff"


def org_code(org: str) -> str:
    return org.strip().upper()


def role_token(data_dir: Path, *, role: str, org: str) -> str:
    """A development token for `role` of `org`, its subject naming both (`00C-staff`)."""
    code = org_code(org)
    return local_token(data_dir, scope=ROLE_SCOPES[role], audience="cef-api", org=code, sub=f"{code}-{role}")


def api_client(data_dir: Path, *, role: str, org: str) -> httpx.Client:
    """A client of the local CEF API acting as `role` of `org`."""
    import httpx

    return httpx.Client(
        base_url=service_url("cef-api"),
        headers={"Authorization": f"Bearer {role_token(data_dir, role=role, org=org)}"},
        timeout=httpx.Timeout(600, connect=5),
    )


def segment(value: str) -> str:
    """One path segment: a provider's line_ref may hold '/', '?', '#' or spaces."""
    from urllib.parse import quote

    return quote(value, safe="")


def expect(response: httpx.Response, *statuses: int) -> Any:
    """The JSON body of a response with one of `statuses` (200 unless told); any other ends the
    command with the service's problem."""
    if response.status_code not in (statuses or (200,)):
        fail(problem_text(response))
    return response.json()


def all_pages(
    client: httpx.Client, path: str, *, what: str, params: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every item of a paged list (following next_cursor), with the first page's other fields
    (its reasons_explained those of every page); `what` names the items in the progress shown on
    stderr."""
    items: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    query = {k: v for k, v in (params or {}).items() if v is not None}
    with console.status(f"fetching {what}…") as status:
        while True:
            page = expect(call(client, "GET", path, params=query))
            if first is None:
                first = page
            elif page.get("reasons_explained"):
                known = {e.get("code") for e in first.get("reasons_explained") or []}
                more = [e for e in page["reasons_explained"] if e.get("code") not in known]
                first["reasons_explained"] = [*(first.get("reasons_explained") or []), *more]
            items += page["items"]
            status.update(f"fetching {what}… {len(items)}")
            if not page.get("next_cursor"):
                return items, first
            query["cursor"] = page["next_cursor"]


def print_next(text: str, args: list[str], data_dir: Path) -> None:
    """What to do next, as a command the user can paste (it reaches the API this command did)."""
    line = command_line([*args, *data_dir_args(data_dir)], env_prefix=service_env("cef-api"))
    out.print(f"\n{text}\n{line}", soft_wrap=True, highlight=False, markup=False)


def wrapped(text: str, *, indent: str = "  ", first: str | None = None) -> str:
    """`text` wrapped to COLUMNS, every line after the first indented a little more."""
    import textwrap

    return textwrap.fill(
        text,
        COLUMNS - 1,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def explain_reasons(codes: list[str], explained: list[dict[str, Any]]) -> None:
    """Each reason code shown, once, with its one-sentence explanation, wrapped to COLUMNS."""
    by_code = {str(e.get("code")): e for e in explained}
    shown = [c for c in dict.fromkeys(codes) if c]
    if not shown:
        return
    out.print("\nWhat the reasons mean:", highlight=False)
    for code in shown:
        summary = str(by_code.get(code, {}).get("summary") or "(no explanation known)")
        out.print(wrapped(f"{code}: {summary}"), highlight=False, markup=False)


def reasons_width(codes: list[str]) -> int:
    """A reasons column at least as wide as its longest code: a code is never broken."""
    return max((len(c) for c in codes), default=7)


def download(
    client: httpx.Client,
    path: str,
    *,
    output: Path,
    params: dict[str, Any] | None = None,
    total_lines: int | None = None,
) -> tuple[int, int]:
    """Streams a CSV answer of the API into `output`, showing bytes and lines on stderr; returns
    (bytes, rows after the header). A failed request leaves no file behind."""
    import httpx
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn

    written = newlines = 0
    partial = output.with_name(output.name + ".part")
    try:
        with client.stream("GET", path, params=params, headers={"Accept": "text/csv"}) as r:
            if r.status_code != 200:
                r.read()
                fail(problem_text(r))
            columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn()]
            # Drawn only on a terminal: a log or a pipe gets the one line the command prints after.
            bar = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
            with bar as progress, partial.open("wb") as f:
                task = progress.add_task(f"{output.name}: 0 lines", total=None)
                for chunk in r.iter_bytes():
                    f.write(chunk)
                    written += len(chunk)
                    newlines += chunk.count(b"\n")
                    rows = max(newlines - 1, 0)
                    done = f"{rows}/{total_lines}" if total_lines is not None else str(rows)
                    progress.update(task, completed=written, description=f"{output.name}: {done} lines")
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        fail(
            f"nothing answered at {client.base_url} ({type(exc).__name__}): "
            "is `cef up` running, on the ports this shell's CEF_*_PORT settings name?",
            code=UNREACHABLE,
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output)
    return written, max(newlines - 1, 0)


def money_cell(value: object) -> str:
    return "" if value is None else str(value)


def reason_catalogue(client: httpx.Client) -> list[dict[str, Any]]:
    """GET /v1/reasons: each reason code with its explanation; [] when the API cannot say (the
    explanation is a help, never a reason for a command to fail)."""
    r = call(client, "GET", "/v1/reasons")
    if r.status_code != 200:
        return []
    items = r.json().get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
