"""A cursor this service never issued (digits of another script, a number beyond the database's
integers) is a 400 problem naming `cursor` on every paged listing, never a server error."""

from __future__ import annotations

import generate_world
import pytest
from api_support import Api

CURSORS = [
    "\u00b9",  # '¹': str.isdigit() says yes, int() says no
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() reads it, but no cursor of ours holds one
    "99999999999999999999999",
    str(2**63),
    str(2**31),  # beyond the INTEGER columns the cursors stand for
    "-1",
    "1.5",
]


@pytest.fixture
async def submitted(api: Api, world: generate_world.World) -> tuple[Api, str, generate_world.Invoice]:
    await api.load_world(world)
    inv = world.invoices[0]
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    return api, r.json()["id"], inv


@pytest.mark.parametrize("cursor", CURSORS)
async def test_a_cursor_never_issued_is_400_naming_it(
    submitted: tuple[Api, str, generate_world.Invoice], cursor: str
) -> None:
    api, invoice_id, inv = submitted
    provider, commissioner = inv.header["provider_code"], inv.header["commissioner_code"]
    for url, headers in [
        ("/v1/invoices", api.h("invoices:submit", org=provider)),
        ("/v1/invoices/approved-to-pay", api.h("invoices:read", org=commissioner)),
        (f"/v1/invoices/{invoice_id}/lines", api.h("invoices:submit", org=provider)),
        (f"/v1/invoices/{invoice_id}/lines", api.h("invoices:validate", org=commissioner)),
    ]:
        r = await api.client.get(url, params={"cursor": cursor}, headers=headers)
        assert r.status_code == 400, (url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == "bad-cursor"
        assert body["detail"].startswith("cursor ")
        assert body["errors"][0]["field"] == "cursor"


async def test_the_largest_cursor_is_an_empty_page(
    submitted: tuple[Api, str, generate_world.Invoice],
) -> None:
    api, invoice_id, inv = submitted
    headers = api.h("invoices:submit", org=inv.header["provider_code"])
    for url in ("/v1/invoices", f"/v1/invoices/{invoice_id}/lines"):
        r = await api.client.get(url, params={"cursor": str(2**31 - 1)}, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert (page["items"], page["next_cursor"]) == ([], None)
