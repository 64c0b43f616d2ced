"""Fixtures of the audit service's tests: a migrated database of each kind and the app over it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cef_audit.config import Settings
from cef_audit.main import MIGRATIONS, create_app
from cef_common.testing import app_client

# Test modules are imported with --import-mode=importlib; they reach shared helpers by this path.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def audit_db(db_kind: str, database_factory: Any) -> str:
    return str(database_factory(db_kind, MIGRATIONS))


@pytest.fixture
def sqlite_db(database_factory: Any) -> str:
    return str(database_factory("sqlite", MIGRATIONS))


@pytest.fixture
def make_settings(data_dir: Path, dev_issuer: Any) -> Callable[..., Settings]:
    def _make(url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": url,
            "dev_issuer_enabled": True,
            "environment": "test",
            "checkpoint_interval_seconds": 0,
            **overrides,
        }
        return Settings(**values)

    return _make


@pytest.fixture
async def client(audit_db: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    app = create_app(make_settings(audit_db, checkpoint_every_events=5))
    async with app_client(app) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def writer(dev_issuer: Any) -> dict[str, str]:
    return dev_issuer.headers("audit:write", sub="cef-api", aud="audit")


@pytest.fixture
def reader(dev_issuer: Any) -> dict[str, str]:
    return dev_issuer.headers("audit:read", sub="auditor-1", org="X26", aud="audit")
