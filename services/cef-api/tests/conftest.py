"""Fixtures of the cef-api tests: a real tokeniser on a free port, the cef-api app in process,
and small worlds made by the repository's world generator."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from api_support import Api, Tokeniser, api_settings, generate_world, running_api, start_tokeniser  # noqa: E402

from cef_api.main import MIGRATIONS  # noqa: E402
from cef_common.testing import DevIssuer  # noqa: E402


@pytest.fixture
def tokeniser(data_dir: Path, database_factory: Any, dev_issuer: DevIssuer) -> Iterator[Tokeniser]:
    from cef_tokeniser.main import MIGRATIONS as TOKENISER_MIGRATIONS

    url = database_factory("sqlite", Path(TOKENISER_MIGRATIONS))
    with start_tokeniser(data_dir, url) as server:
        yield Tokeniser(server.url, server)


@pytest.fixture
def api_db(db_kind: str, database_factory: Any) -> str:
    return str(database_factory(db_kind, MIGRATIONS))


@pytest.fixture
def sqlite_api_db(database_factory: Any) -> str:
    return str(database_factory("sqlite", MIGRATIONS))


@pytest.fixture
async def api(data_dir: Path, api_db: str, tokeniser: Tokeniser, dev_issuer: DevIssuer) -> AsyncIterator[Api]:
    async with running_api(api_settings(data_dir, api_db, tokeniser.url), dev_issuer) as a:
        yield a


@pytest.fixture
async def sqlite_api(
    data_dir: Path, sqlite_api_db: str, tokeniser: Tokeniser, dev_issuer: DevIssuer
) -> AsyncIterator[Api]:
    async with running_api(api_settings(data_dir, sqlite_api_db, tokeniser.url), dev_issuer) as a:
        yield a


@pytest.fixture
def world() -> generate_world.World:
    return generate_world.generate(seed=7, patients=160, invoices=4, lines_per_invoice=60)
