"""`cef up`: the three services and the web app as separate processes on this machine, until stopped."""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from cef_cli.common import COLUMNS, DataDirOption, command_line, console, data_dir_args, fail, out, shown_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from cef_common.settings import BaseServiceSettings

# How long `cef up` waits for every process to answer; a busy two-core machine needs a while.
READY_TIMEOUT = float(os.environ.get("CEF_UP_READY_TIMEOUT", "120"))
DEFAULT_PORTS = {"tokeniser": 8001, "cef-api": 8002, "audit": 8003, "web": 8000}


@dataclass
class ServiceRun:
    name: str
    env_prefix: str
    module: str
    settings: BaseServiceSettings
    migrations: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def port_setting(self) -> str:
        return f"{self.env_prefix}PORT"


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if `cef up` itself dies, so no service is left orphaned.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# Started in this order: audit first, so the others' first events have somewhere to go; the web
# app last, over the services it calls.
SERVICE_PACKAGES = (
    ("audit", "CEF_AUDIT_", "cef_audit"),
    ("tokeniser", "CEF_TOKENISER_", "cef_tokeniser"),
    ("cef-api", "CEF_API_", "cef_api"),
    ("web", "CEF_WEB_", "cef_web"),
)


def _services(data_dir: Path) -> list[ServiceRun]:
    runs = []
    for name, prefix, package in SERVICE_PACKAGES:
        # Imported here, not at the top, so `cef token` stays quick.
        main = importlib.import_module(f"{package}.main")
        settings_class = importlib.import_module(f"{package}.config").Settings
        runs.append(
            ServiceRun(
                name, prefix, f"{package}.main", settings_class(data_dir=data_dir), Path(main.MIGRATIONS)
            )
        )
    return runs


def _issuer(name: str, keys_dir: Path, scopes: list[str] | None) -> dict[str, object]:
    from cef_common.keys import jwks_path_for

    return {
        "issuer": name,
        "jwks_file": str(jwks_path_for(keys_dir / f"{name}.pem")),
        "allowed_scopes": scopes,
    }


# What each service's own key may grant when it calls a peer.
PEER_SCOPES = {
    "tokeniser": ["audit:write"],
    "cef-api": ["audit:write", "tokenise", "detokenise"],
    "audit": [],
}


def _trusted_scopes(service: str, issuer: str) -> list[str] | None:
    """What `service` accepts from tokens `issuer` signs; None: it does not trust `issuer` at all.

    The web app signs tokens for the person signed in to it: the CEF API and the audit service
    accept from it only the scopes people hold there (cef_web.roles.SCOPES_FOR), and the audit
    service its own audit:write; the tokeniser does not trust it (people never call the tokeniser)."""
    if issuer == "web":
        from cef_web.roles import SCOPES_FOR

        if service == "cef-api":
            return list(SCOPES_FOR["cef-api"])
        if service == "audit":
            return ["audit:write", *SCOPES_FOR["audit"]]
        return None
    if service == "web":
        # The web app verifies no bearer tokens (people sign in to it); it trusts no peer.
        return None
    return PEER_SCOPES[issuer]


def _environment(
    run: ServiceRun, runs: list[ServiceRun], data_dir: Path, demo_dir: Path | None
) -> dict[str, str]:
    keys = data_dir / "keys"
    p = run.env_prefix
    env = dict(os.environ)
    env[f"{p}DATA_DIR"] = str(data_dir)
    env.setdefault(f"{p}DEV_ISSUER_ENABLED", "true")
    if f"{p}TRUSTED_ISSUERS" not in os.environ:
        peers = [
            _issuer(other.name, keys, scopes)
            for other in runs
            if other is not run and (scopes := _trusted_scopes(run.name, other.name)) is not None
        ]
        env[f"{p}TRUSTED_ISSUERS"] = json.dumps(peers)
    urls = {r.name: r.url for r in runs}
    if run.name in ("tokeniser", "cef-api"):
        env.setdefault(f"{p}AUDIT_URL", urls["audit"])
    if run.name == "web":
        env.setdefault(f"{p}CEF_API_URL", urls["cef-api"])
        env.setdefault(f"{p}AUDIT_URL", urls["audit"])
    if run.name == "cef-api":
        env.setdefault(f"{p}TOKENISER_URL", urls["tokeniser"])
        if demo_dir is not None:
            env.setdefault(f"{p}SEED_REFERENCE_DIR", str(demo_dir / "reference"))
    if run.name == "tokeniser":
        from cef_tokeniser.keys import ensure_dev_master_key

        master = data_dir / "keys" / "tokeniser-master.key"
        if ensure_dev_master_key(master):
            console.print(
                f"[yellow]created a development master key for the tokeniser at {master}[/]", soft_wrap=True
            )
        env.setdefault(f"{p}MASTER_KEY_FILE", str(master))
    return env


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def port_in_use(host: str, port: int) -> bool:
    """Whether another program listens on (host, port). Bound as uvicorn binds (SO_REUSEADDR), so
    a port an earlier run left in TIME_WAIT counts as free, as it is for the service."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _free_port_near(port: int) -> int:
    for candidate in range(port + 10, min(port + 100, 65536), 10):
        if not port_in_use("127.0.0.1", candidate):
            return candidate
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_advice(taken: list[ServiceRun]) -> str:
    """What to tell a user whose ports are taken: which, and the command that avoids them."""
    ports = ", ".join(f"{run.settings.port} ({run.name})" for run in taken)
    settings = " ".join(f"{run.port_setting}={_free_port_near(run.settings.port)}" for run in taken)
    return (
        f"port{'s' if len(taken) > 1 else ''} {ports} already in use by another program (an earlier "
        f"`cef up`?). Stop that program, or choose other ports, e.g. `{settings} make up`, and set the "
        "same in the shell of the other `cef` commands."
    )


def _check_ports(runs: list[ServiceRun]) -> None:
    """Refuses to start when a port is taken, before anything is started or migrated."""
    by_port: dict[int, str] = {}
    for run in runs:
        other = by_port.setdefault(run.settings.port, run.name)
        if other != run.name:
            fail(
                f"{other} and {run.name} are both configured for port {run.settings.port}: "
                f"give one of them another port ({run.port_setting})"
            )
    taken = [run for run in runs if port_in_use(run.settings.host, run.settings.port)]
    if taken:
        fail(_port_advice(taken))


def _listens(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the listening socket of `port`: a /readyz answer on the port
    may come from another program that took it first. None where /proc cannot tell (not Linux)."""
    inodes = set()
    try:
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(path) as table:
                next(table)
                for row in table:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                        inodes.add(f"socket:[{fields[9]}]")
        fds = os.listdir(f"/proc/{pid}/fd")
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def _stop_all(runs: list[ServiceRun], timeout: float = 15.0) -> None:
    """Stops the processes in the reverse of their start order, each group before the next: the web
    app and the CEF API finish what they are doing (a validation in flight still calls the
    tokeniser, and their outboxes deliver to the audit service) before the services they call stop."""
    deadline = time.monotonic() + timeout
    for group in (("web",), ("cef-api",), ("tokeniser",), ("audit",)):
        members = [run for run in runs if run.name in group and run.process is not None]
        for run in members:
            assert run.process is not None
            if run.process.poll() is None:
                run.process.send_signal(signal.SIGTERM)
        for run in members:
            assert run.process is not None
            try:
                run.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
    # Anything not named above (none today) is stopped last.
    for run in runs:
        if run.process is not None and run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                run.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


def demo_directory() -> Path | None:
    """The demo world kept in the repository (beside the workspace root)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "demo"
        if (candidate / "reference").is_dir():
            return candidate
    return None


@dataclass
class Reference:
    """What the CEF API's database holds of reference data: the version in force per dataset and
    who loaded it; and which demo invoices were already submitted (number → id)."""

    versions: dict[str, int] = field(default_factory=dict)
    loaders: set[str] = field(default_factory=set)
    invoices: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def seeded(self) -> bool:
        from cef_api.seed import SEED_PRINCIPAL

        return bool(self.versions) and self.loaders == {SEED_PRINCIPAL.sub}

    def listed(self) -> str:
        return ", ".join(f"{d} v{v}" for d, v in sorted(self.versions.items()))


def _reference(run: ServiceRun) -> Reference:
    import sqlalchemy as sa
    from sqlmodel import Session

    from cef_api.invoices.repository import IV
    from cef_api.reference import repository
    from cef_common import db

    engine = db.make_engine(run.settings.effective_database_url)
    try:
        with Session(engine) as session:
            current = repository.current_versions(session)
            rows = session.execute(sa.select(IV.provider_code, IV.invoice_number, IV.id)).all()
    finally:
        engine.dispose()
    return Reference(
        versions={d: v.version for d, v in current.items()},
        loaders={v.loaded_by for v in current.values()},
        invoices={(p, n): i for p, n, i in rows},
    )


def up(data_dir: DataDirOption = Path("var")) -> None:
    """Run the tokeniser, CEF API and audit services, and the web app, until Ctrl-C.

    Ctrl-C or SIGTERM stops them all; so does one of them dying (then the exit status is 1).

    A new data directory gets development keys and the demo world (demo/); a data directory used
    before keeps what it holds. Refuses to start when a port is taken (CEF_*_PORT changes them)."""
    from cef_common import db
    from cef_common.devtokens import ensure_dev_issuer
    from cef_common.keys import load_signing_key

    fresh = not (data_dir / "keys").exists()
    runs = _services(data_dir)
    _check_ports(runs)
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_issuer(data_dir / "keys")
    for run in runs:
        # Each service's own signing key; peers trust it through the JWKS beside it.
        load_signing_key(run.settings.effective_signing_key_file, create=True)
        db.upgrade(run.migrations, run.settings.effective_database_url)
    api = next(run for run in runs if run.name == "cef-api")
    before = _reference(api)
    demo = demo_directory() if fresh else None

    stopping = False

    def _on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    started = time.monotonic()
    for run in runs:
        env = _environment(run, runs, data_dir, demo)
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{run.module}:create_app",
            "--host",
            run.settings.host,
            "--port",
            str(run.settings.port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "10",
        ]
        run.process = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)

    pending = {run.name for run in runs}
    while pending and not stopping:
        for run in runs:
            assert run.process is not None
            if run.process.poll() is not None:
                _stop_all(runs)
                why = f"{run.name} exited with status {run.process.returncode} while starting (log above)"
                if port_in_use(run.settings.host, run.settings.port):
                    why += f": {_port_advice([run])}"
                fail(why)
            # Ready only when this run's own process answers: another program may hold the port.
            if (
                run.name in pending
                and _ready(run.url)
                and _listens(run.process.pid, run.settings.port) is not False
            ):
                pending.discard(run.name)
        if time.monotonic() - started > READY_TIMEOUT:
            # A port another program holds is the likelier reason than slowness: say so.
            taken = [
                run
                for run in runs
                if run.name in pending
                and run.process is not None
                and _listens(run.process.pid, run.settings.port) is False
                and port_in_use(run.settings.host, run.settings.port)
            ]
            _stop_all(runs)
            why = f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(sorted(pending))}"
            fail(f"{why}: {_port_advice(taken)}" if taken else why)
        time.sleep(0.2)

    if not stopping:
        _banner(runs, data_dir, time.monotonic() - started, demo_directory(), before, _reference(api))

    exit_code = 0
    while not stopping:
        for run in runs:
            assert run.process is not None
            if run.process.poll() is not None:
                console.print(
                    f"[bold red]{run.name} exited with status {run.process.returncode}; stopping[/]"
                )
                exit_code = 1
                stopping = True
        time.sleep(0.2)
    console.print("stopping the services…")
    _stop_all(runs)
    console.print("stopped.")
    raise SystemExit(exit_code)


def _say(text: str) -> None:
    # Commands must survive copy and paste: never wrapped by rich, whatever the terminal's width;
    # command_line() breaks them to fit COLUMNS itself.
    out.print(text, soft_wrap=True, highlight=False)


def _prose(text: str) -> None:
    _say("\n".join(textwrap.wrap(text, COLUMNS - 1, break_on_hyphens=False, break_long_words=False)))


def _banner(
    runs: list[ServiceRun],
    data_dir: Path,
    seconds: float,
    demo: Path | None,
    before: Reference,
    now: Reference,
) -> None:
    # Commands for another shell: it will not have this one's non-default ports unless told.
    # Every command printed here but `cef token` calls the CEF API.
    api = next(run for run in runs if run.name == "cef-api")
    port = api.settings.port
    prefix = f"{api.port_setting}={port}" if port != DEFAULT_PORTS[api.name] else ""

    def cef(*args: str) -> str:
        return command_line(list(args), indent="  ", env_prefix="" if args[0] == "token" else prefix)

    from rich.markup import escape

    where = shown_path(data_dir)
    _say(f"\n[bold green]CEF is up[/] in {seconds:.1f} s\n  data directory {escape(where)}")
    web = next((run for run in runs if run.name == "web"), None)
    for run in runs:
        if run is not web:
            _say(f"  {run.name:<10} {run.url}   docs {run.url}/docs")
    if web is not None:
        _say(f"\n[bold]Open the web app in a browser:[/] {web.url}")
        _prose(
            "Sign in as any role with the development sign-in: a provider (organisation RTR, RVW "
            "or RXP in the demo world), CEF staff, finance or the board (00C), or an auditor."
        )
    _say("\nA token (development issuer; e.g. a provider submitting invoices):")
    _say(cef("token", "--scope", "invoices:submit", "--org", "RTR", *data_dir_args(data_dir)))

    _say("")
    if not now.versions:
        _prose(f"No reference data is loaded in {where}; load some (the demo world, say) with:")
        if demo is not None:
            _say(cef("reference", "load", shown_path(demo / "reference"), *data_dir_args(data_dir)))
        _closing()
        return
    if before.versions:
        what = "The demo world" if before.seeded else "Reference data"
        _prose(
            f"{what} was already loaded in {where} (reference versions {before.listed()}) and was "
            f"not loaded again. To start afresh, stop `cef up` and remove {where}/."
        )
    elif now.seeded:
        _prose(f"The demo world is loaded (reference versions {now.listed()}).")
    else:
        _prose(f"Reference data is loaded (versions {now.listed()}).")
    if demo is not None and now.seeded:
        _demo_invoice(demo, data_dir, now, cef)
        _roles(demo, data_dir, runs, cef)
    _closing()


def _demo_invoice(demo: Path, data_dir: Path, now: Reference, cef: Callable[..., str]) -> None:
    """The first demo invoice not yet submitted, or how to see the first one that was."""
    invoices = sorted((demo / "invoices").glob("*.json"))
    submitted: list[tuple[Path, str, str]] = []
    for inv in invoices:
        try:
            header = json.loads(inv.read_bytes())
            key = (str(header["provider_code"]).upper(), str(header["invoice_number"]))
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if key not in now.invoices:
            _say("\nSubmit a demo invoice and see its outcome:")
            _say(
                cef("submit", shown_path(inv), shown_path(inv.with_suffix(".csv")), *data_dir_args(data_dir))
            )
            return
        submitted.append((inv, key[0], now.invoices[key]))
    if submitted:
        _, provider, invoice_id = submitted[0]
        _say("\nThe demo invoices were already submitted; see one again:")
        _say(cef("invoices", "show", invoice_id, "--org", provider, *data_dir_args(data_dir)))


def _roles(demo: Path, data_dir: Path, runs: list[ServiceRun], cef: Callable[..., str]) -> None:
    """Each role's first step on the demo world's own organisations (docs/cli.md has the rest)."""
    try:
        header = json.loads(sorted((demo / "invoices").glob("*.json"))[0].read_bytes())
        provider = str(header["provider_code"]).upper()
        commissioner = str(header["commissioner_code"]).upper()
    except (IndexError, ValueError, KeyError, TypeError, OSError):
        return
    audit = next(run for run in runs if run.name == "audit")
    audit_prefix = (
        f"{audit.port_setting}={audit.settings.port}"
        if audit.settings.port != DEFAULT_PORTS[audit.name]
        else ""
    )
    where = data_dir_args(data_dir)
    _say("\nThen, as each role (each command prints the next one; docs/cli.md has them all):")
    _say(f"  CEF staff, the query lines to resolve:\n{cef('queries', 'list', '--org', commissioner, *where)}")
    _say(f"  the provider, challenges to answer:\n{cef('challenges', 'list', '--org', provider, *where)}")
    _say(f"  finance, invoices approved to pay:\n{cef('finance', 'approved', '--org', commissioner, *where)}")
    _say(f"  the board, outcomes by month:\n{cef('reports', 'outcomes', '--org', commissioner, *where)}")
    summary = command_line(["audit", "summary", *where], indent="  ", env_prefix=audit_prefix)
    _say(f"  an auditor, what happened:\n{summary}")


def _closing() -> None:
    _say("\nCtrl-C stops them all.\n")
    sys.stdout.flush()
