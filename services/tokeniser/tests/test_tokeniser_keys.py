"""The key ring: versions, rotation, the master key check and the operations behind `cef keys`."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cef_common import db
from cef_tokeniser.config import Settings
from cef_tokeniser.crypto import MasterKey
from cef_tokeniser.keys import (
    KeyRing,
    KeyStoreError,
    MasterKeyError,
    list_data_keys,
    load_master_key,
    rotate_data_key,
)
from cef_tokeniser.main import MIGRATIONS, create_app


@pytest.fixture
def ring(db_url: str, master_key_hex: str) -> Any:
    engine = db.make_engine(db_url)
    yield KeyRing(engine, MasterKey.from_hex(master_key_hex))
    engine.dispose()


def test_first_use_creates_version_1_once(ring: KeyRing) -> None:
    assert ring.current_version("nhs_number", "cef") is None
    first = ring.current("nhs_number", "cef")
    again = ring.current("nhs_number", "cef")
    assert first.version == again.version == 1
    assert first.token("9434765919") == again.token("9434765919")
    assert [(v.kind, v.context, v.version, v.current) for v in ring.versions()] == [
        ("nhs_number", "cef", 1, True)
    ]


def test_rotation_adds_a_version_and_keeps_the_old_one(ring: KeyRing) -> None:
    v1 = ring.current("postcode", "cef")
    assert ring.rotate("postcode", "cef") == 2
    assert ring.rotate("postcode", "cef") == 3
    assert ring.current("postcode", "cef").version == 3
    old = ring.get("postcode", "cef", 1)
    assert old is not None
    assert old.token("TS18 1HU") == v1.token("TS18 1HU")
    assert ring.get("postcode", "cef", 4) is None
    assert ring.get("postcode", "research", 1) is None
    # Other kinds and contexts keep their own versions.
    assert ring.current("postcode", "research").version == 1
    current = {(v.kind, v.context, v.version): v.current for v in ring.versions()}
    assert current == {
        ("postcode", "cef", 1): False,
        ("postcode", "cef", 2): False,
        ("postcode", "cef", 3): True,
        ("postcode", "research", 1): True,
    }


def test_a_fresh_key_ring_reads_the_same_keys_from_the_database(
    db_url: str, ring: KeyRing, master_key_hex: str
) -> None:
    token = ring.current("nhs_number", "cef").token("9434765919")
    engine = db.make_engine(db_url)
    try:
        other = KeyRing(engine, MasterKey.from_hex(master_key_hex))
        assert other.current("nhs_number", "cef").token("9434765919") == token
    finally:
        engine.dispose()


def test_key_creation_and_rotation_are_audited(db_url: str, ring: KeyRing, outbox_events: Any) -> None:
    ring.current("nhs_number", "cef")
    ring.rotate("nhs_number", "cef")
    events = outbox_events(db_url)
    assert [(e["type"], e["entity"]["id"]) for e in events] == [
        ("key.create", "nhs_number/cef/v1"),
        ("key.rotate", "nhs_number/cef/v2"),
    ]


def test_another_master_key_is_refused(db_url: str, ring: KeyRing) -> None:
    ring.current("nhs_number", "cef")
    engine = db.make_engine(db_url)
    try:
        wrong = KeyRing(engine, MasterKey(secrets.token_bytes(32)))
        with pytest.raises(MasterKeyError, match="configure the master key this database was created with"):
            wrong.check_master_key()
    finally:
        engine.dispose()


async def test_the_service_refuses_to_start_with_another_master_key(
    db_url: str, make_settings: Callable[..., Settings], ring: KeyRing
) -> None:
    from cef_common.testing import app_client

    ring.current("nhs_number", "cef")
    app = create_app(make_settings(db_url, master_key=SecretStr(secrets.token_hex(32))))
    with pytest.raises(MasterKeyError):
        async with app_client(app):
            pass


def test_the_service_refuses_to_start_without_a_master_key(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        create_app(Settings(data_dir=tmp_path, environment="test"))


def test_cli_operations_work_on_the_configured_database(
    db_url: str, make_settings: Callable[..., Settings], outbox_events: Any
) -> None:
    settings = make_settings(db_url)
    assert list_data_keys(settings) == []
    first = rotate_data_key(settings, kind="nhs_number")
    assert (first.kind, first.context, first.version, first.current) == ("nhs_number", "cef", 1, True)
    second = rotate_data_key(settings, kind="nhs_number", context="cef")
    assert second.version == 2
    assert rotate_data_key(settings, kind="nhs_number", context="research").version == 1
    listed = [(v.context, v.version, v.current) for v in list_data_keys(settings)]
    assert listed == [("cef", 1, False), ("cef", 2, True), ("research", 1, True)]
    assert all(v.master_key_id == load_master_key(settings).key_id for v in list_data_keys(settings))
    rotation = [e for e in outbox_events(db_url) if e["type"] == "key.rotate"]
    assert rotation
    assert rotation[0]["actor"]["client"] == "cef-cli"


def test_cli_operations_refuse_an_unmigrated_database(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(KeyStoreError, match="cef migrate"):
        rotate_data_key(settings, kind="postcode")


def test_migrations_run_down_and_up(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'm.db'}"
    db.upgrade(MIGRATIONS, url)
    command.downgrade(db.alembic_config(MIGRATIONS, url), "0001")
    db.upgrade(MIGRATIONS, url)
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == db.head_revision(MIGRATIONS)
    finally:
        engine.dispose()


def test_cli_operations_check_kind_and_context(db_url: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(db_url)
    with pytest.raises(KeyStoreError, match="kind must be one of"):
        rotate_data_key(settings, kind="passport")
    with pytest.raises(KeyStoreError, match="not a context name"):
        rotate_data_key(settings, kind="postcode", context="Has Spaces")
    assert list_data_keys(settings) == []
