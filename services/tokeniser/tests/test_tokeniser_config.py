"""Settings of the tokeniser and loading its master key."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from cef_tokeniser.config import Settings
from cef_tokeniser.keys import MasterKeyError, ensure_dev_master_key, load_master_key


def test_production_refuses_to_start_without_a_master_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs a master key in production"):
        Settings(data_dir=tmp_path, environment="production")


def test_production_refuses_the_development_master_key(tmp_path: Path) -> None:
    dev_key = tmp_path / "keys" / "tokeniser-master.key"
    with pytest.raises(ValidationError, match="development master key"):
        Settings(data_dir=tmp_path, environment="production", master_key_file=dev_key)


def test_master_key_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(data_dir=tmp_path, master_key=SecretStr("00" * 32), master_key_file=tmp_path / "k")


def test_default_contexts_add_the_development_clients_outside_production(tmp_path: Path) -> None:
    dev = Settings(data_dir=tmp_path)
    assert dev.contexts_for("cef-api") == {"cef"}
    assert dev.contexts_for("cef-cli") == {"cef"}
    assert dev.contexts_for("tests") == {"cef", "research"}
    assert dev.contexts_for("someone-else") == frozenset()
    prod = Settings(data_dir=tmp_path, environment="production", master_key_file=tmp_path / "prod.key")
    assert prod.contexts_for("cef-api") == {"cef"}
    assert prod.contexts_for("cef-cli") == frozenset()
    assert prod.contexts_for("tests") == frozenset()


def test_explicit_client_contexts_are_taken_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CEF_TOKENISER_CLIENT_CONTEXTS", '{"cef-api": ["cef"], "research-portal": ["research"]}'
    )
    settings = Settings(data_dir=tmp_path)
    assert settings.contexts_for("research-portal") == {"research"}
    assert settings.contexts_for("tests") == frozenset()


def test_context_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="context names"):
        Settings(data_dir=tmp_path, client_contexts={"x": ["Has Spaces"]})
    with pytest.raises(ValidationError, match="context names"):
        Settings(data_dir=tmp_path, default_context="")


def test_body_limit_fits_batches_of_100000(tmp_path: Path) -> None:
    # 100,000 NHS numbers in 3-3-4 form with quotes and commas: about 1.5 MB.
    assert Settings(data_dir=tmp_path).max_body_bytes >= 100_000 * 16 * 4


def test_master_key_from_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_hex(32)
    monkeypatch.setenv("CEF_TOKENISER_MASTER_KEY", key)
    settings = Settings(data_dir=tmp_path)
    assert key not in repr(settings)
    assert load_master_key(settings).key_id


def test_master_key_from_a_file_and_the_development_fallback(tmp_path: Path) -> None:
    dev_key = tmp_path / "keys" / "tokeniser-master.key"
    with pytest.raises(MasterKeyError, match="does not exist"):
        load_master_key(Settings(data_dir=tmp_path))
    assert ensure_dev_master_key(dev_key) is True
    assert ensure_dev_master_key(dev_key) is False
    assert os.stat(dev_key).st_mode & 0o777 == 0o600
    from_fallback = load_master_key(Settings(data_dir=tmp_path))
    from_file = load_master_key(Settings(data_dir=tmp_path, master_key_file=dev_key))
    assert from_fallback.key_id == from_file.key_id


def test_production_never_falls_back_to_the_development_key(tmp_path: Path) -> None:
    ensure_dev_master_key(tmp_path / "keys" / "tokeniser-master.key")
    settings = Settings(
        data_dir=tmp_path, environment="production", master_key=SecretStr(secrets.token_hex(32))
    )
    assert settings.effective_master_key_file is None


def test_a_malformed_master_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("not-a-key-0123456789")
    with pytest.raises(MasterKeyError, match="64 hexadecimal") as err:
        load_master_key(Settings(data_dir=tmp_path, master_key_file=path))
    assert "not-a-key" not in str(err.value)
    with pytest.raises(MasterKeyError, match="CEF_TOKENISER_MASTER_KEY"):
        load_master_key(Settings(data_dir=tmp_path, master_key=SecretStr("abc")))


def test_production_refuses_a_master_key_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "prod.key"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o644)
    settings = Settings(data_dir=tmp_path, environment="production", master_key_file=path)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_master_key(settings)
    path.chmod(0o600)
    assert load_master_key(settings).key_id
