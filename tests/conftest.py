"""Cross-service tests: real processes on real ports, the shared sample world when present."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cef_common.testing import SHARED_DIR, free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = SHARED_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared is not beside the checkout")
    return SHARED


CEF = [sys.executable, "-m", "cef_cli.main"]


@dataclass
class Up:
    process: subprocess.Popen[str]
    data_dir: Path
    ports: dict[str, int]
    env: dict[str, str]
    log: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def token(self, scope: str, aud: str, org: str | None = None) -> str:
        args = [*CEF, "token", "--scope", scope, "--aud", aud, "--data-dir", str(self.data_dir)]
        if org:
            args += ["--org", org]
        r = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=60, check=True)
        return r.stdout.strip().splitlines()[-1]

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    ports = {"tokeniser": free_port(), "cef-api": free_port(), "audit": free_port(), "web": free_port()}
    env = {
        **os.environ,
        "CEF_TOKENISER_PORT": str(ports["tokeniser"]),
        "CEF_API_PORT": str(ports["cef-api"]),
        "CEF_AUDIT_PORT": str(ports["audit"]),
        "CEF_WEB_PORT": str(ports["web"]),
        "CEF_API_PUBLIC_URL": f"http://127.0.0.1:{ports['cef-api']}",
        "CEF_TOKENISER_PUBLIC_URL": f"http://127.0.0.1:{ports['tokeniser']}",
        "CEF_AUDIT_PUBLIC_URL": f"http://127.0.0.1:{ports['audit']}",
    }
    data_dir = tmp_path / "var"
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*CEF, "up", "--data-dir", str(data_dir)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    system = Up(proc, data_dir, ports, env, log)
    # Four processes start at once; on a busy two-core machine that can take a while.
    deadline = time.monotonic() + 150
    try:
        # Ready means what a user sees: every service answers /readyz and `cef up` has said so.
        while not (all(_ready(system.url(s)) for s in ports) and "CEF is up" in log.read_text()):
            assert proc.poll() is None, f"cef up exited early: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"not ready in 150 s: {log.read_text()[-2000:]}"
            time.sleep(0.3)
        yield system
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
