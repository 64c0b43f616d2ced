"""Engines and migrations on SQLite and PostgreSQL; the session dependency owns the transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from cef_common import db
from cef_common.testing import app_client

AUD = "common-test"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h:5432/d",
        "postgresql+psycopg2://u@h/d",
        "postgresql+psycopg://u@h/d?passfile=/run/pgpass",
    ],
)
def test_postgresql_urls_use_psycopg_3(url: str) -> None:
    normalised = make_url(db.normalise_url(url))
    assert normalised.get_driver_name() == "psycopg"
    assert (normalised.host, normalised.database, normalised.query) == (
        make_url(url).host,
        make_url(url).database,
        make_url(url).query,
    )


def test_sqlite_urls_are_kept() -> None:
    assert db.normalise_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_make_engine_and_upgrade(migrations_dir: Path, database_factory: Any, db_kind: str) -> None:
    url = database_factory(db_kind, None)
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(migrations_dir, url)
        assert db.current_revision(engine) == db.head_revision(migrations_dir) == "0002"
        columns = {c["name"] for c in inspect(engine).get_columns("common_test_widget")}
        assert columns == {"id", "name", "colour"}
        db.upgrade(migrations_dir, url)  # idempotent
        assert db.current_revision(engine) == "0002"
    finally:
        engine.dispose()


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}"
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL: every commit synced
        assert (tmp_path / "nested" / "dir" / "x.db").exists()
    finally:
        engine.dispose()


async def test_the_session_commits_on_success_and_rolls_back_on_error(
    make_app: Any, dev_issuer: Any, database_factory: Any, db_kind: str, migrations_dir: Path
) -> None:
    app = make_app(database_url=database_factory(db_kind, migrations_dir))
    headers = dev_issuer.headers("things:read things:write", aud=AUD)
    async with app_client(app) as client:
        assert (await client.post("/v1/widgets", json={"name": "kept"}, headers=headers)).status_code == 201
        refused = await client.post(
            "/v1/widgets", json={"name": "dropped", "fail_after_write": True}, headers=headers
        )
        assert refused.status_code == 409
        assert refused.json()["code"] == "widget-refused"
        assert (await client.get("/v1/widgets", headers=headers)).json() == ["kept"]
        # A database error (the unique name) is also rolled back, and the service stays usable.
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            await client.post("/v1/widgets", json={"name": "kept"}, headers=headers)
        assert (await client.post("/v1/widgets", json={"name": "second"}, headers=headers)).status_code == 201
        assert (await client.get("/v1/widgets", headers=headers)).json() == ["kept", "second"]
