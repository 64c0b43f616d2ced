"""`cef up` as a newcomer meets it: ports another program holds, a second run on the same data
directory, and the commands its banner prints, run exactly as printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest

from cef_common.testing import free_port

pytestmark = pytest.mark.e2e

CEF = [sys.executable, "-m", "cef_cli.main"]


def _ports_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEF_")}
    env.update(
        CEF_TOKENISER_PORT=str(ports["tokeniser"]),
        CEF_API_PORT=str(ports["cef-api"]),
        CEF_AUDIT_PORT=str(ports["audit"]),
        CEF_WEB_PORT=str(ports["web"]),
    )
    return env


@contextmanager
def _listening(port: int) -> Iterator[None]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield


def test_up_refuses_ports_another_program_holds(tmp_path: Path) -> None:
    ports = {"tokeniser": free_port(), "cef-api": free_port(), "audit": free_port(), "web": free_port()}
    data_dir = tmp_path / "var"
    with _listening(ports["cef-api"]):
        run = subprocess.run(
            [*CEF, "up", "--data-dir", str(data_dir)],
            env={**_ports_env(ports), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1
    said = " ".join(run.stderr.split())
    assert f"port {ports['cef-api']} (cef-api) already in use" in said
    assert "CEF_API_PORT=" in said
    assert "CEF is up" not in run.stdout
    # Refused before anything was created or started.
    assert not data_dir.exists()


class _ImpostorReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


# `cef up` with its port check skipped: what happens when a program takes a port after the check.
RACE = """
import cef_cli.up
cef_cli.up._check_ports = lambda runs: None
from cef_cli.main import app
app()
"""


def test_up_does_not_say_up_when_a_service_cannot_bind(tmp_path: Path) -> None:
    ports = {"tokeniser": free_port(), "cef-api": free_port(), "audit": free_port(), "web": free_port()}
    # Not a new data directory, so no demo world: the CEF API gets to its port sooner.
    (tmp_path / "var" / "keys").mkdir(parents=True)
    impostor = HTTPServer(("127.0.0.1", ports["cef-api"]), _ImpostorReady)
    Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        run = subprocess.run(
            [sys.executable, "-c", RACE, "up", "--data-dir", str(tmp_path / "var")],
            env={**_ports_env(ports), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        impostor.shutdown()
        impostor.server_close()
    # The impostor answered /readyz on the port all along; it was not the CEF API.
    assert run.returncode == 1, run.stdout + run.stderr[-2000:]
    assert "CEF is up" not in run.stdout
    said = " ".join(run.stderr.split())
    assert f"port {ports['cef-api']} (cef-api) already in use" in said


def _start(data_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*CEF, "up", "--data-dir", str(data_dir)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=data_dir.parent,
        )
    deadline = time.monotonic() + 180
    while "Ctrl-C stops them all" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0


def _printed_after(banner: str, heading: str) -> str:
    """The command printed under `heading`, with its continuation lines."""
    lines = banner.split(heading, 1)[1].splitlines()[1:]
    command = []
    for line in lines:
        command.append(line)
        if not line.endswith("\\"):
            break
    return "\n".join(command)


def _run_as_printed(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Another shell in the same directory: none of the CEF_* settings of the one that ran `cef up`.
    return subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_the_banner_tells_the_truth_and_its_commands_run_as_printed(tmp_path: Path) -> None:
    ports = {"tokeniser": free_port(), "cef-api": free_port(), "audit": free_port(), "web": free_port()}
    env = {**_ports_env(ports), "COLUMNS": "200"}
    shell = {k: v for k, v in env.items() if not k.startswith("CEF_")}
    # Started outside the checkout: the banner's paths are then absolute, or relative to here.
    data_dir = tmp_path / "var"

    proc = _start(data_dir, env, tmp_path / "first.log")
    try:
        banner = (tmp_path / "first.log").read_text()
        shown = [line for line in banner.split("CEF is up", 1)[1].splitlines() if not line.startswith("{")]
        assert "uv run" not in banner
        assert all(len(line) <= 80 for line in shown), [line for line in shown if len(line) > 80]
        assert "The demo world is loaded (reference versions" in banner
        # The web app's address, as printed, answers with its sign-in page.
        web_url = f"http://127.0.0.1:{ports['web']}"
        assert f"Open the web app in a browser: {web_url}" in banner
        assert "Sign in" in httpx.get(f"{web_url}/sign-in", timeout=10).text
        token = _run_as_printed(_printed_after(banner, "A token (development issuer"), shell, tmp_path)
        assert token.returncode == 0, token.stderr
        assert token.stdout.strip().count(".") == 2
        submit = _run_as_printed(
            _printed_after(banner, "Submit a demo invoice and see its outcome:"), shell, tmp_path
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        assert "validated" in submit.stdout
        again = _run_as_printed(_printed_after(submit.stdout, "See it again with:"), shell, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "validated" in again.stdout
        # Each role's first step runs as printed, on the invoice just submitted.
        for heading, says in (
            ("CEF staff, the query lines to resolve:", "RTR-201904-0000"),
            ("the provider, challenges to answer:", ""),
            ("finance, invoices approved to pay:", ""),
            ("the board, outcomes by month:", "2019-04"),
            ("an auditor, what happened:", "invoice.submit"),
        ):
            done = _run_as_printed(_printed_after(banner, heading), shell, tmp_path)
            assert done.returncode == 0, heading + done.stdout + done.stderr
            assert says in done.stdout, heading + done.stdout
    finally:
        _stop(proc)

    proc = _start(data_dir, env, tmp_path / "second.log")
    try:
        banner = (tmp_path / "second.log").read_text()
        flat = " ".join(banner.split())
        assert "The demo world was already loaded in" in flat
        assert "gp-practices v1" in flat
        assert "To start afresh, stop `cef up` and remove" in flat
        # The first demo invoice went in on the first run; the banner offers the next one.
        submit = _run_as_printed(
            _printed_after(banner, "Submit a demo invoice and see its outcome:"), shell, tmp_path
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        assert "RVW-201905-0001" in submit.stdout
    finally:
        _stop(proc)
