"""A dump of the CEF database holds no NHS number, date of birth or full postcode."""

from __future__ import annotations

import generate_world
from api_support import Api, identifiers_in

from cef_common.testing import database_values


async def test_database_dump_has_no_identifiers(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    for inv in world.invoices:
        assert (await api.submit(inv.header, inv.backing)).status_code == 201
    assert identifiers_in(database_values(api.app.state.engine), world) == []
