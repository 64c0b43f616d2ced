"""Fixtures of the export tests: a validated invoice of the test world whose first line_refs would
be formulas in a spreadsheet."""

from __future__ import annotations

import sys
from pathlib import Path

import generate_world
import pytest
from api_support import Api

sys.path.insert(0, str(Path(__file__).parent))

from exports_support import FORMULA_REFS, Submitted, with_line_refs  # noqa: E402


@pytest.fixture
async def submitted(api: Api, world: generate_world.World) -> Submitted:
    await api.load_world(world)
    inv = world.invoices[0]
    originals = [e.line_ref for e in inv.expected if e.line_ref][: len(FORMULA_REFS)]
    refs = dict(zip(originals, FORMULA_REFS, strict=True))
    r = await api.submit(inv.header, with_line_refs(inv.backing, refs))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "validated"
    return Submitted(api, r.json(), inv, refs)
