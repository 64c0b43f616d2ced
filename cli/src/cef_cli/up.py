"""`cef up`: the three services as separate processes on this machine, until stopped."""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

from cef_cli.common import DataDirOption, console, fail, out
from cef_common import db
from cef_common.auth import ensure_dev_issuer
from cef_common.keys import jwks_path_for, load_signing_key
from cef_common.settings import BaseServiceSettings

READY_TIMEOUT = 60.0


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


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if `cef up` itself dies, so no service is left orphaned.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# Started in this order: audit first, so the others' first events have somewhere to go.
SERVICE_PACKAGES = (
    ("audit", "CEF_AUDIT_", "cef_audit"),
    ("tokeniser", "CEF_TOKENISER_", "cef_tokeniser"),
    ("cef-api", "CEF_API_", "cef_api"),
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


def _environment(
    run: ServiceRun, runs: list[ServiceRun], data_dir: Path, demo_dir: Path | None
) -> dict[str, str]:
    keys = data_dir / "keys"
    p = run.env_prefix
    env = dict(os.environ)
    env[f"{p}DATA_DIR"] = str(data_dir)
    env.setdefault(f"{p}DEV_ISSUER_ENABLED", "true")
    if f"{p}TRUSTED_ISSUERS" not in os.environ:
        peers = [_issuer(other.name, keys, PEER_SCOPES[other.name]) for other in runs if other is not run]
        env[f"{p}TRUSTED_ISSUERS"] = json.dumps(peers)
    urls = {r.name: r.url for r in runs}
    if run.name in ("tokeniser", "cef-api"):
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
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_all(runs: list[ServiceRun], timeout: float = 15.0) -> None:
    for run in runs:
        if run.process and run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for run in runs:
        if run.process is None:
            continue
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


def up(data_dir: DataDirOption = Path("var")) -> None:
    """Run the tokeniser, CEF API and audit services until Ctrl-C or SIGTERM."""
    fresh = not (data_dir / "keys").exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = data_dir / "keys"
    ensure_dev_issuer(keys)
    runs = _services(data_dir)
    for run in runs:
        # Each service's own signing key; peers trust it through the JWKS beside it.
        load_signing_key(run.settings.effective_signing_key_file, create=True)
        db.upgrade(run.migrations, run.settings.effective_database_url)
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
                fail(f"{run.name} exited with status {run.process.returncode} while starting (log above)")
            if run.name in pending and _ready(run.url):
                pending.discard(run.name)
        if time.monotonic() - started > READY_TIMEOUT:
            _stop_all(runs)
            fail(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(sorted(pending))}")
        time.sleep(0.2)

    if not stopping:
        _banner(runs, data_dir, time.monotonic() - started, demo)

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


def _shown(path: Path) -> str:
    """A path as a user would type it from here: relative when under the working directory."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _say(text: str) -> None:
    # Commands must survive copy and paste: never wrapped, whatever the terminal's width.
    out.print(text, soft_wrap=True, highlight=False)


def _banner(runs: list[ServiceRun], data_dir: Path, seconds: float, demo: Path | None) -> None:
    _say(f"\n[bold green]CEF is up[/] in {seconds:.1f} s (data directory {data_dir})")
    for run in runs:
        _say(f"  {run.name:<10} {run.url}   docs {run.url}/docs")
    _say("\nA token (development issuer; e.g. a provider submitting invoices):")
    _say(f"  uv run cef token --scope invoices:submit --org RTR --data-dir {_shown(data_dir)}")
    if demo is not None:
        invoices = sorted((demo / "invoices").glob("*.json"))
        if invoices:
            inv = invoices[0]
            _say("\nThe demo world is loaded. Submit a demo invoice and see its outcome:")
            files = f"{_shown(inv)} {_shown(inv.with_suffix('.csv'))}"
            _say(f"  uv run cef submit {files} --data-dir {_shown(data_dir)}")
    _say("\nCtrl-C stops all three.\n")
    sys.stdout.flush()
