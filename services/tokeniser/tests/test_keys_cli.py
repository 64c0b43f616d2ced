"""`cef keys rotate` and `cef keys list` on the tokeniser database of a data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cef_cli.keys import app
from cef_common import db
from cef_tokeniser.config import Settings
from cef_tokeniser.keys import ensure_dev_master_key
from cef_tokeniser.main import MIGRATIONS

runner = CliRunner()


@pytest.fixture
def cef_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory as `cef up` leaves it: the development master key, a migrated database."""
    for name in ("MASTER_KEY", "MASTER_KEY_FILE", "DATABASE_URL", "ENVIRONMENT", "CLIENT_CONTEXTS"):
        monkeypatch.delenv(f"CEF_TOKENISER_{name}", raising=False)
    data_dir = tmp_path / "var"
    ensure_dev_master_key(data_dir / "keys" / "tokeniser-master.key")
    db.upgrade(MIGRATIONS, Settings(data_dir=data_dir).effective_database_url)
    return data_dir


def test_rotate_prints_the_new_version_and_list_shows_it(cef_data_dir: Path) -> None:
    result = runner.invoke(app, ["list", "--data-dir", str(cef_data_dir)])
    assert result.exit_code == 0, result.output
    assert "no data keys yet" in result.output
    for expected in ("1", "2"):
        result = runner.invoke(app, ["rotate", "--kind", "nhs_number", "--data-dir", str(cef_data_dir)])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().splitlines()[-1] == expected
    result = runner.invoke(
        app, ["rotate", "--kind", "postcode", "--context", "research", "--data-dir", str(cef_data_dir)]
    )
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines()[-1] == "1"
    result = runner.invoke(app, ["list", "--data-dir", str(cef_data_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "nhs_number" in line or "postcode" in line]
    assert len(lines) == 3
    assert "research" in lines[2]
    key_text = (cef_data_dir / "keys" / "tokeniser-master.key").read_text().strip()
    assert key_text not in result.output


def test_rotate_refuses_an_unknown_kind(cef_data_dir: Path) -> None:
    result = runner.invoke(app, ["rotate", "--kind", "passport", "--data-dir", str(cef_data_dir)])
    assert result.exit_code != 0


def test_rotate_without_a_master_key_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CEF_TOKENISER_MASTER_KEY", raising=False)
    monkeypatch.delenv("CEF_TOKENISER_MASTER_KEY_FILE", raising=False)
    result = runner.invoke(app, ["rotate", "--kind", "postcode", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "master key" in result.output
    assert "does not exist" in result.output


def test_rotate_on_an_unmigrated_database_says_to_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CEF_TOKENISER_MASTER_KEY", raising=False)
    monkeypatch.delenv("CEF_TOKENISER_DATABASE_URL", raising=False)
    ensure_dev_master_key(tmp_path / "keys" / "tokeniser-master.key")
    result = runner.invoke(app, ["rotate", "--kind", "postcode", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "cef migrate" in result.output
