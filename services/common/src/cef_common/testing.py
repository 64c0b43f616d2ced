"""Test support shared by every service, loaded as a pytest plugin (`-p cef_common.testing`).

Databases: PostgreSQL from CEF_TEST_DATABASE_URL when set, else from testcontainers when a Docker
engine answers, else the server on 127.0.0.1:5432. Each service's migrations are applied once to
a template database; every test then gets its own copy (CREATE DATABASE … TEMPLATE), so tests are
isolated and migrated exactly as production is. SQLite databases are fresh files per test."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from cef_common import db
from cef_common.auth import TokenSigner, ensure_dev_issuer
from cef_common.keys import SigningKey

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _shared_dir() -> Path:
    """`shared/` beside the checkout (CEF_SHARED_DIR overrides): the sample world and the spec."""
    if explicit := os.environ.get("CEF_SHARED_DIR"):
        return Path(explicit)
    for parent in Path(__file__).resolve().parents:
        if (parent / "services").is_dir() and (parent / "pyproject.toml").is_file():
            return parent.parent / "shared"
    return Path.cwd().parent / "shared"


SHARED_DIR = _shared_dir()


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in pyproject.toml, beside the fuzzing support (cef_common.schema_fuzz).
    config.addinivalue_line("markers", "fuzz: schema fuzzing of a service's API (`make fuzz` runs it longer)")


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # any failure means: no engine to use
        return False


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresServer:
    """A PostgreSQL server on which tests create and drop their own databases."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._templates: dict[str, str] = {}
        self._created: list[str] = []
        self._lock = threading.Lock()

    def _admin(self, sql: str) -> None:
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(sql)

    def url_for(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def template_for(self, migrations: Path) -> str:
        key = hashlib.sha256(str(migrations.resolve()).encode()).hexdigest()[:10]
        with self._lock:
            if key not in self._templates:
                name = f"cef_tpl_{key}_{os.getpid()}"
                self._admin(f'DROP DATABASE IF EXISTS "{name}"')
                self._admin(f'CREATE DATABASE "{name}"')
                self._created.append(name)
                db.upgrade(migrations, self.url_for(name))
                self._templates[key] = name
            return self._templates[key]

    def fresh(self, migrations: Path | None) -> str:
        name = f"cef_t_{uuid.uuid4().hex[:16]}"
        if migrations is None:
            self._admin(f'CREATE DATABASE "{name}"')
        else:
            template = self.template_for(migrations)
            for attempt in range(5):
                try:
                    self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.2 * (attempt + 1))
        self._created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with contextlib.suppress(psycopg.Error):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in reversed(self._created):
            with contextlib.suppress(psycopg.Error):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server for this test session (see the module docstring for the order)."""
    container: Any = None
    url = os.environ.get("CEF_TEST_DATABASE_URL")
    if not url and _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine")
        container.start()
        url = container.get_connection_url()
    if not url:
        url = LOCAL_POSTGRES
    if not _reachable(url):
        message = f"no PostgreSQL server at {make_url(url).render_as_string()}; set CEF_TEST_DATABASE_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(url)
    try:
        yield server
    finally:
        server.close()
        if container is not None:
            container.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both supported databases."""
    return str(request.param)


@dataclass
class DatabaseFactory:
    tmp_path: Path
    request: pytest.FixtureRequest

    def __call__(self, kind: str, migrations: Path | None) -> str:
        """A fresh database of `kind`, migrated to head with `migrations` (None: left empty)."""
        if kind == "sqlite":
            url = f"sqlite:///{self.tmp_path / f'db-{uuid.uuid4().hex[:8]}.sqlite'}"
            if migrations is not None:
                db.upgrade(migrations, url)
            return url
        server: PostgresServer = self.request.getfixturevalue("postgres_server")
        url = server.fresh(migrations)
        self.request.addfinalizer(lambda: server.drop(url))
        return url


@pytest.fixture
def database_factory(tmp_path: Path, request: pytest.FixtureRequest) -> DatabaseFactory:
    return DatabaseFactory(tmp_path, request)


@dataclass
class DevIssuer:
    """The development issuer, under a test's own keys directory."""

    keys_dir: Path
    signer: TokenSigner

    def token(
        self,
        scope: str,
        *,
        org: str | None = None,
        sub: str = "tester",
        aud: str = "cef-api",
        ttl: int = 600,
        extra: dict[str, Any] | None = None,
    ) -> str:
        return self.signer.mint(
            sub=sub, audience=aud, scopes=scope.split(), ttl_seconds=ttl, org=org, client="tests", extra=extra
        )

    def headers(self, scope: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope, **kwargs)}"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "var"
    d.mkdir()
    return d


@pytest.fixture
def dev_issuer(data_dir: Path) -> DevIssuer:
    keys = data_dir / "keys"
    return DevIssuer(keys, ensure_dev_issuer(keys))


@pytest.fixture
def stranger_key() -> SigningKey:
    """A key no service trusts."""
    return SigningKey.generate()


@contextlib.asynccontextmanager
async def app_client(app: FastAPI, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=60) as client:
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server for an app on a free loopback port, in a thread (for peer calls)."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def stop(self) -> None:
        self.__exit__()


def database_values(engine: Any) -> Iterator[tuple[str, str]]:
    """Every value of every table of a database, as (table, text): what a dump would show, for
    tests that search it for identifiers."""
    with engine.connect() as conn:
        metadata = sa.MetaData()
        metadata.reflect(conn)
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for value in row:
                    if value is not None:
                        yield table.name, str(value)
