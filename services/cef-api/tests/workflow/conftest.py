"""Fixtures of the workflow tests: a world of invoices rich in query lines, submitted and validated."""

from __future__ import annotations

import sys
from pathlib import Path

import generate_world
import pytest
from api_support import Api

sys.path.insert(0, str(Path(__file__).parent))

from workflow_support import Desk, query_world  # noqa: E402


@pytest.fixture
def world() -> generate_world.World:
    return query_world()


@pytest.fixture
async def desk(api: Api, world: generate_world.World) -> Desk:
    """Three validated invoices to 00C: RTR's first, then RVW's, then RTR's second."""
    await api.load_world(world)
    invoices = []
    for inv in world.invoices:
        r = await api.submit(inv.header, inv.backing)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "validated"
        invoices.append(r.json())
    return Desk(api, invoices, world.invoices)
