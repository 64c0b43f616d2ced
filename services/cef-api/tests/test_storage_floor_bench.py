"""The storage-floor benchmark runs, small, and stores what it says it stores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import storage_floor  # noqa: E402


def test_the_storage_floor_benchmark_stores_every_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'floor.db'}"
    storage_floor.measure(url, 1_234, "SQLite")
    printed = capsys.readouterr().out
    assert "with the service's indexes" in printed
    assert "line_no index only" in printed
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        lines = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT invoice_seq) FROM invoice_line")
        ).one()
        indexes = {index["name"] for index in sa.inspect(connection).get_indexes("invoice_line")}
    engine.dispose()
    # The second run's lines, of its own invoice, with the secondary indexes dropped before it.
    assert tuple(lines) == (1_234, 1)
    assert indexes == {"uq_invoice_line_invoice_line_no"}
