"""`cef reference load`, `cef submit` and `cef purge` against a real cef-api on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_support import REPO, api_settings
from typer.testing import CliRunner

from cef_api.main import create_app
from cef_cli.main import app
from cef_common.testing import ServerThread

DEMO = REPO / "demo"


@pytest.fixture
def served(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with ServerThread(create_app(api_settings(data_dir, sqlite_api_db, tokeniser.url))) as server:
        monkeypatch.setenv("CEF_API_PUBLIC_URL", server.url)
        monkeypatch.setenv("CEF_API_DATABASE_URL", sqlite_api_db)
        yield server.url


def test_reference_load_submit_and_purge(
    served: str, data_dir: Path, sqlite_api_db: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["reference", "load", str(DEMO / "reference"), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "loaded 11 reference file(s)" in result.output
    first = sorted((DEMO / "invoices").glob("*.json"))[0]
    result = runner.invoke(
        app, ["submit", str(first), str(first.with_suffix(".csv")), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "validated" in result.output
    assert "line_ref" in result.output
    result = runner.invoke(app, ["purge", "--older-than", "0", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "purged line-level tokens of 0 invoice(s)" in result.output
    engine = sa.create_engine(sqlite_api_db)
    with engine.connect() as conn:
        purges = conn.execute(
            sa.text("SELECT count(*) FROM audit_outbox WHERE payload LIKE '%invoice.purge%'")
        )
        assert purges.scalar_one() == 1
    engine.dispose()


def test_reference_load_reports_each_bad_file(served: str, data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ref"
    bad.mkdir()
    (bad / "providers.csv").write_text("provider_code,name,market_forces_factor\nRTR,South Tees,lots\n")
    (bad / "tariff.csv").write_bytes((DEMO / "reference" / "tariff.csv").read_bytes())
    result = CliRunner().invoke(app, ["reference", "load", str(bad), "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "providers.csv" in result.output
    assert "line 2" in result.output
    assert "tariff.csv: " in result.output


def test_a_reload_says_what_it_changed(served: str, data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["reference", "load", str(DEMO / "reference"), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    month = tmp_path / "ref"
    month.mkdir()
    header, first, *rest = (DEMO / "reference" / "patients.csv").read_bytes().splitlines(keepends=True)
    (month / "patients.csv").write_bytes(b"".join([header, *rest]))
    result = runner.invoke(app, ["reference", "load", str(month), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert f"0 added, 1 retired, {len(rest):,} unchanged" in " ".join(result.output.split())
