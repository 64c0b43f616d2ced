"""`cef --help` and `cef token` start without importing the web stack, the database layer or the
services: every command paid ~3.5 s for those imports before each command imported its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Imported by a command that needs them, never by the ones below.
HEAVY = ("fastapi", "starlette", "httpx", "sqlalchemy", "sqlmodel", "alembic", "uvicorn")
SERVICES = ("cef_api", "cef_audit", "cef_tokeniser")

PROBE = """
import json, os, sys
sys.argv = ["cef", *json.loads(os.environ["PROBE_ARGS"])]
from cef_cli.main import app
try:
    app()
except SystemExit:
    pass
with open(os.environ["PROBE_OUT"], "w") as f:
    json.dump(sorted({name.split(".")[0] for name in sys.modules}), f)
"""


def _imported(args: list[str], tmp_path: Path) -> tuple[set[str], str]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "PROBE_ARGS": json.dumps(args), "PROBE_OUT": str(out)}
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.exists(), run.stderr
    return set(json.loads(out.read_text())), run.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["audit", "--help"],
        ["audit", "verify", "--help"],
        ["invoices", "show", "--help"],
        ["up", "--help"],
        ["submit", "--help"],
        ["keys", "--help"],
        ["reference", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_neither_the_web_stack_nor_the_services(args: list[str], tmp_path: Path) -> None:
    modules, output = _imported(args, tmp_path)
    assert "Usage" in output
    assert not modules & {*HEAVY, *SERVICES}, sorted(modules & {*HEAVY, *SERVICES})


def test_top_level_help_does_not_load_rich(tmp_path: Path) -> None:
    # rich's help formatting alone costs about as much as everything else `cef --help` imports.
    modules, _ = _imported(["--help"], tmp_path)
    assert "rich" not in modules


def test_token_mints_without_the_web_stack(tmp_path: Path, data_dir: Path, dev_issuer: Any) -> None:
    args = ["token", "--scope", "invoices:submit", "--org", "RTR", "--data-dir", str(data_dir)]
    modules, output = _imported(args, tmp_path)
    token = output.strip().splitlines()[-1]
    assert token.count(".") == 2
    assert not modules & {*HEAVY, *SERVICES}, sorted(modules & {*HEAVY, *SERVICES})
