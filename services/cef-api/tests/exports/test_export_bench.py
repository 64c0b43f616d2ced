"""The export benchmark runs, small, and exports every line it stored (no timing is checked)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))

import export_bench  # noqa: E402


def test_the_export_benchmark_exports_every_line_for_both_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_bench.measure(f"sqlite:///{tmp_path / 'export.db'}", 1_234, "SQLite")
    printed = capsys.readouterr().out
    rows = dict(re.findall(r"^\s+(provider|staff)\s+([\d,]+) rows", printed, re.MULTILINE))
    assert rows == {"provider": "1,234", "staff": "1,234"}
    assert re.search(r"peak\s+\d+ MiB \(\+\d+\)", printed)
