"""Fixtures of the tokeniser's tests: settings, a migrated database, an app and a client."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cef_common.auth import TokenSigner
from cef_common.keys import jwks_path_for, load_signing_key
from cef_common.settings import TrustedIssuer
from cef_common.testing import DevIssuer, app_client, free_port
from cef_tokeniser.config import Settings
from cef_tokeniser.main import MIGRATIONS, create_app

# Test modules are imported with --import-mode=importlib; they reach shared helpers by this path.
sys.path.insert(0, str(Path(__file__).parent))

# Real-looking NHS numbers from the 999 range (never issued), valid under Modulus 11.
NHS_NUMBERS = ["9999083013", "9999099602", "9992199350", "9992319488"]


@pytest.fixture
def master_key_hex() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def peer_signer(data_dir: Path) -> TokenSigner:
    """The CEF API's own key, as the tokeniser trusts it (the only peer that may re-identify)."""
    return TokenSigner(load_signing_key(data_dir / "keys" / "cef-api.pem", create=True), "cef-api")


@pytest.fixture
def make_settings(data_dir: Path, master_key_hex: str, peer_signer: TokenSigner) -> Callable[..., Settings]:
    def _make(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": database_url,
            "dev_issuer_enabled": True,
            "environment": "test",
            "master_key": SecretStr(master_key_hex),
            # Nothing listens there: events stay in the outbox, where the tests read them.
            "audit_url": f"http://127.0.0.1:{free_port()}",
            "trusted_issuers": [
                TrustedIssuer(
                    issuer="cef-api",
                    jwks_file=jwks_path_for(data_dir / "keys" / "cef-api.pem"),
                    allowed_scopes=["tokenise", "detokenise"],
                )
            ],
        }
        values.update(overrides)
        return Settings(**values)

    return _make


@pytest.fixture
def sqlite_url(database_factory: Any) -> str:
    return str(database_factory("sqlite", MIGRATIONS))


@pytest.fixture
def db_url(database_factory: Any, db_kind: str) -> str:
    """A migrated database of each kind (the tests using it run on SQLite and PostgreSQL)."""
    return str(database_factory(db_kind, MIGRATIONS))


@pytest.fixture
async def client(
    sqlite_url: str, make_settings: Callable[..., Settings], dev_issuer: DevIssuer
) -> AsyncIterator[Any]:
    app = create_app(make_settings(sqlite_url))
    async with app_client(app) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def db_client(
    db_url: str, make_settings: Callable[..., Settings], dev_issuer: DevIssuer
) -> AsyncIterator[Any]:
    app = create_app(make_settings(db_url))
    async with app_client(app) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def headers(dev_issuer: DevIssuer, peer_signer: TokenSigner) -> Callable[..., dict[str, str]]:
    """Authorization headers for the tokeniser, by default from client `tests`; `peer=True`: the
    CEF API's own service token (issuer and client cef-api), as it calls to re-identify."""

    def _headers(
        scope: str, *, client: str | None = None, sub: str = "tester", peer: bool = False
    ) -> dict[str, str]:
        if peer:
            token = peer_signer.mint(
                sub="cef-api", audience="tokeniser", scopes=scope.split(), ttl_seconds=600, client="cef-api"
            )
        elif client is None:
            token = dev_issuer.token(scope, aud="tokeniser", sub=sub)
        else:
            token = dev_issuer.signer.mint(
                sub=sub, audience="tokeniser", scopes=scope.split(), ttl_seconds=600, client=client
            )
        return {"Authorization": f"Bearer {token}"}

    return _headers


def _outbox_events(app_or_url: Any) -> list[dict[str, Any]]:
    """The audit events waiting in the tokeniser's outbox, oldest first."""
    import orjson
    import sqlalchemy as sa

    from cef_common import db

    if isinstance(app_or_url, str):
        engine = db.make_engine(app_or_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id")).scalars().all()
        finally:
            engine.dispose()
    else:
        with app_or_url.state.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id")).scalars().all()
    return [orjson.loads(r) for r in rows]


@pytest.fixture
def outbox_events() -> Callable[[Any], list[dict[str, Any]]]:
    """Reads the audit events waiting in the outbox of an app (or a database URL)."""
    return _outbox_events


@pytest.fixture
def events_of() -> Callable[[Any, str], list[dict[str, Any]]]:
    """The outbox events of one type."""
    return lambda app, type_: [e for e in _outbox_events(app) if e["type"] == type_]
