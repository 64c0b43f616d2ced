"""The three services as separate processes, each killable and restartable on its own (`cef up`
stops them all when one dies), prepared as `cef up` prepares them: for the fault-injection tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cef_cli.up import SERVICE_PACKAGES, ServiceRun, _die_with_parent, _environment
from cef_common import db
from cef_common.auth import ensure_dev_issuer, mint_dev_token
from cef_common.keys import load_signing_key
from cef_common.testing import free_port

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

import generate_world  # noqa: E402

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 60.0, every: float = 0.2) -> T:
    """Polls `condition` until it returns something truthy (bounded: fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = condition()
        except (httpx.HTTPError, OSError):
            got = None  # type: ignore[assignment]
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Service:
    """One service process, started in a session of its own so that it and its worker processes
    can be killed together."""

    run: ServiceRun
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.run.url

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{self.run.module}:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.run.settings.port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
        ]
        with self.log.open("ab") as sink:
            # A session of its own (killed as a group), and gone with this process if it dies.
            self.process = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        def up() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, f"{self.run.name} exited: {self.log.read_text()[-3000:]}"
            return self.ready()

        wait_for(up, f"{self.run.name} to be ready", timeout)

    def children(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self, *, group: bool = True) -> None:
        """SIGKILL to the service, and with `group` to every process it started (its validation
        workers); without, they are left to notice on their own, as after a real `kill -9`."""
        assert self.process is not None
        try:
            if group:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.kill()
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass


@dataclass
class Stack:
    data_dir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def url(self, name: str) -> str:
        return self.services[name].url

    def token(self, scope: str, aud: str, org: str | None = None) -> str:
        return mint_dev_token(
            self.data_dir / "keys", scopes=[scope], audience=aud, org=org, sub="fault-tester"
        )

    def headers(self, scope: str, aud: str = "cef-api", org: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope, aud, org)}"}

    def submit(
        self,
        header: dict[str, Any],
        backing: bytes,
        *,
        key: str | None = None,
        timeout: float = 120.0,
    ) -> httpx.Response:
        headers = self.headers("invoices:submit", org=header["provider_code"])
        if key is not None:
            headers["Idempotency-Key"] = key
        return httpx.post(
            f"{self.url('cef-api')}/v1/invoices",
            files={
                "invoice": ("invoice.json", json.dumps(header).encode(), "application/json"),
                "backing_data": ("backing.csv", backing, "text/csv"),
            },
            headers=headers,
            timeout=timeout,
        )

    def invoice(self, invoice_id: str, provider_code: str) -> dict[str, Any]:
        r = httpx.get(
            f"{self.url('cef-api')}/v1/invoices/{invoice_id}",
            headers=self.headers("invoices:submit", org=provider_code),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def invoices(self, provider_code: str) -> list[dict[str, Any]]:
        """Every invoice of the provider, through the API."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        headers = self.headers("invoices:submit", org=provider_code)
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            r = httpx.get(f"{self.url('cef-api')}/v1/invoices", params=params, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            page = r.json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def stop(self) -> None:
        # The cef-api first: its outbox relay sends what it holds to a running audit service.
        for name in ("cef-api", "tokeniser", "audit"):
            if name in self.services:
                self.services[name].stop()


@contextmanager
def running_stack(
    tmp: Path,
    *,
    reference_dir: Path,
    env: dict[str, dict[str, str]] | None = None,
    database_urls: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Starts audit, tokeniser and cef-api as `cef up` would (same environment, migrations and
    keys), on free ports, the cef-api seeding its reference data from `reference_dir`."""
    data_dir = tmp / "var"
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_issuer(data_dir / "keys")
    runs: list[ServiceRun] = []
    for name, prefix, package in SERVICE_PACKAGES:
        if name == "web":
            # The faults here are the three services'; the web app has its own tests.
            continue
        main = __import__(f"{package}.main", fromlist=["MIGRATIONS"])
        settings_class = __import__(f"{package}.config", fromlist=["Settings"]).Settings
        options: dict[str, Any] = {"data_dir": data_dir, "port": free_port()}
        if database_urls:
            options["database_url"] = database_urls[name]
        runs.append(
            ServiceRun(name, prefix, f"{package}.main", settings_class(**options), Path(main.MIGRATIONS))
        )
    stack = Stack(data_dir)
    for run in runs:
        load_signing_key(run.settings.effective_signing_key_file, create=True)
        db.upgrade(run.migrations, run.settings.effective_database_url)
        service_env = _environment(run, runs, data_dir, None)
        p = run.env_prefix
        service_env[f"{p}PORT"] = str(run.settings.port)
        service_env[f"{p}LOG_FORMAT"] = "json"
        if database_urls:
            service_env[f"{p}DATABASE_URL"] = database_urls[run.name]
        if run.name == "cef-api":
            service_env[f"{p}SEED_REFERENCE_DIR"] = str(reference_dir)
            # Worker processes take seconds to start on a busy machine: a test that wants them asks.
            service_env[f"{p}VALIDATION_PROCESSES"] = "0"
        service_env.update((env or {}).get(run.name, {}))
        stack.services[run.name] = Service(run, service_env, tmp / f"{run.name}.log")
    try:
        for service in stack.services.values():
            service.start()
        for service in stack.services.values():
            service.wait_ready()
        yield stack
    finally:
        stack.stop()


def small_world(seed: int = 7, invoices: int = 2, lines: int = 20) -> generate_world.World:
    return generate_world.generate(seed=seed, patients=200, invoices=invoices, lines_per_invoice=lines)


def write_reference(world: generate_world.World, out: Path) -> Path:
    world.write(out)
    return out / "reference"


def big_invoice(
    world: generate_world.World, lines: int, seed: int, not_commissioner: str | None = None
) -> tuple[dict[str, str], bytes, list[Any]]:
    """A generated invoice of `lines` lines: header, file, and each line's expected outcome (those
    of an invoice with no earlier one of its commissioner)."""
    expected: list[generate_world.ExpectedLine] = []
    header, chunks = generate_world.big_invoice(
        world, lines, seed=seed, expected=expected, not_commissioner=not_commissioner
    )
    return header, b"".join(chunks), expected


def finished(stack: Stack, invoice_id: str, provider: str) -> dict[str, Any] | None:
    """The invoice once its validation has ended (validated or failed), else None."""
    body = stack.invoice(invoice_id, provider)
    return body if body["status"] not in ("received", "validating") else None


def summary_counts(body: dict[str, Any]) -> tuple[int, int, int, int]:
    s = body["summary"]
    return s["lines"], s["valid"], s["query"], s["rejected"]


def expected_counts(lines: list[generate_world.ExpectedLine]) -> tuple[int, int, int, int]:
    outcomes = Counter(x.outcome for x in lines)
    return len(lines), outcomes["valid"], outcomes["query"], outcomes["rejected"]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status
