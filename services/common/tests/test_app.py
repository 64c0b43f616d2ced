"""The shared app factory: health, readiness against the database and migrations, request context."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import pytest

from cef_common import db
from cef_common.testing import app_client, free_port

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


async def test_healthz(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "common-test"}


async def test_readyz_at_head(
    make_app: Any, migrations_dir: Path, database_factory: Any, db_kind: str
) -> None:
    async with app_client(make_app(database_url=database_factory(db_kind, migrations_dir))) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "migrations": "at head"}


async def test_readyz_is_503_at_an_older_migration(
    make_app: Any, migrations_dir: Path, database_factory: Any, db_kind: str
) -> None:
    url = database_factory(db_kind, None)
    db.upgrade(migrations_dir, url, "0001")
    async with app_client(make_app(database_url=url)) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["migrations"] == "at 0001, head is 0002"
        db.upgrade(migrations_dir, url)
        assert (await client.get("/readyz")).status_code == 200


async def test_readyz_is_503_on_an_empty_database(make_app: Any, database_factory: Any) -> None:
    async with app_client(make_app(database_url=database_factory("sqlite", None))) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "at None, head is 0002"


async def test_readyz_is_503_when_the_database_is_unreachable(make_app: Any) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    async with app_client(make_app(database_url=url)) as client:
        response = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("unreachable: ")
    assert "127.0.0.1" not in response.text  # no connection details to anonymous callers


async def test_jwks_publishes_the_services_public_key(make_app: Any, data_dir: Path) -> None:
    async with app_client(make_app()) as client:
        jwks = (await client.get("/.well-known/jwks.json")).json()
    (key,) = jwks["keys"]
    assert key["kty"] == "EC"
    assert key["alg"] == "ES256"
    assert "d" not in key
    assert (data_dir / "keys" / "common-test.pem").exists()


async def test_request_id_and_traceparent(make_app: Any) -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with app_client(make_app()) as client:
        response = await client.get("/healthz", headers={"X-Request-ID": "abc-123", "traceparent": incoming})
        fresh = await client.get("/healthz", headers={"traceparent": "garbage"})
    assert response.headers["x-request-id"] == "abc-123"
    match = TRACEPARENT.match(response.headers["traceparent"])
    assert match
    assert match.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert match.group(2) != "00f067aa0ba902b7"
    new = TRACEPARENT.match(fresh.headers["traceparent"])
    assert new
    assert new.group(1) != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert fresh.headers["x-request-id"] != response.headers["x-request-id"]


async def test_the_api_documents_its_operations(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/healthz", "/readyz", "/.well-known/jwks.json", "/v1/widgets"} <= set(paths)


async def test_a_production_key_on_a_read_only_volume(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets volumes are read-only and may hold the PEM alone: the service starts and
    publishes its JWKS from the key itself."""
    from cef_common.keys import SigningKey

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    key = SigningKey.generate()
    (secrets / "svc.pem").write_text(key.private_pem)
    real_write_text = Path.write_text

    def read_only(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.parent == secrets:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    app = make_app(environment="production", dev_issuer_enabled=False, signing_key_file=secrets / "svc.pem")
    async with app_client(app) as client:
        response = await client.get("/.well-known/jwks.json")
    assert response.json() == {"keys": [key.public_jwk]}
    assert list(secrets.iterdir()) == [secrets / "svc.pem"]
