"""GET /v1/reasons for every role, and the reasons explained on each page of line outcomes, with
the query state of staff's lines (both databases)."""

from __future__ import annotations

import generate_world
import pytest
from api_support import Api

from cef_api.reasons.catalogue import CATALOGUE, ENTRIES
from cef_api.validation.types import Reason


@pytest.fixture
async def submitted(api: Api, world: generate_world.World) -> tuple[Api, dict, generate_world.Invoice]:
    await api.load_world(world)
    inv = world.invoices[0]
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    return api, r.json(), inv


async def test_every_caller_gets_the_whole_catalogue_cacheable(sqlite_api: Api) -> None:
    api = sqlite_api
    assert (await api.client.get("/v1/reasons")).status_code == 401
    callers = [
        ("invoices:submit", "RTR"),
        ("invoices:validate", "00C"),
        ("invoices:read", "00C"),
        ("reports:read", "00C"),
        ("audit:read", None),
        ("reference:write", None),
    ]
    bodies = []
    for scope, org in callers:
        r = await api.client.get("/v1/reasons", headers=api.h(scope, org=org))
        assert r.status_code == 200, (scope, r.text)
        assert "max-age=" in r.headers["cache-control"]
        bodies.append(r.json())
        etag = r.headers["etag"]
    assert all(b == bodies[0] for b in bodies)
    items = bodies[0]["items"]
    assert [i["code"] for i in items] == [e.code for e in ENTRIES]
    assert {i["code"] for i in items} == {r.value for r in Reason}
    for item in items:
        assert set(item) == {"code", "outcome", "summary", "action"}
        assert item == CATALOGUE[item["code"]].model_dump()
    # The same catalogue again costs nothing: its ETag answers 304 with no body.
    headers = {**api.h("invoices:submit", org="RTR"), "If-None-Match": etag}
    r = await api.client.get("/v1/reasons", headers=headers)
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    r = await api.client.get("/v1/reasons", headers={**headers, "If-None-Match": '"another"'})
    assert r.status_code == 200


async def _pages(api: Api, invoice_id: str, headers: dict[str, str], limit: int) -> list[dict]:
    pages, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get(f"/v1/invoices/{invoice_id}/lines", params=params, headers=headers)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["next_cursor"]
        if not cursor:
            return pages


async def test_each_page_explains_exactly_the_codes_on_it(
    submitted: tuple[Api, dict, generate_world.Invoice],
) -> None:
    api, invoice, inv = submitted
    provider = api.h("invoices:submit", org=inv.header["provider_code"])
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"])
    for headers in (provider, staff):
        pages = await _pages(api, invoice["id"], headers, limit=7)
        assert len(pages) > 2
        seen: set[str] = set()
        for page in pages:
            on_page = {code for item in page["items"] for code in item["reasons"]}
            explained = page["reasons_explained"]
            assert [e["code"] for e in explained] == sorted(on_page)
            assert all(e == CATALOGUE[e["code"]].model_dump() for e in explained)
            seen |= on_page
        # Codes arrive whole, as the engine gives them, and as the world expects.
        assert seen <= {r.value for r in Reason}
        assert seen == {code for line in inv.expected for code in line.reasons}


async def test_staff_items_carry_the_query_state(
    submitted: tuple[Api, dict, generate_world.Invoice],
) -> None:
    api, invoice, inv = submitted
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"])
    lines = await api.lines(invoice["id"], "invoices:validate", inv.header["commissioner_code"])
    assert {(x["outcome"] == "query", x["state"]) for x in lines} <= {(True, "query"), (False, None)}
    query = [x for x in lines if x["outcome"] == "query"]
    assert query, "the world drew no query line"
    r = await api.client.post(
        f"/v1/invoices/{invoice['id']}/lines/{query[0]['line_ref']}/decision",
        json={"decision": "reject", "reason": "no referral on file"},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "rejected"
    again = {
        x["line_ref"]: x
        for x in await api.lines(invoice["id"], "invoices:validate", inv.header["commissioner_code"])
    }
    assert again[query[0]["line_ref"]]["state"] == "rejected"
    assert all(again[x["line_ref"]]["state"] == "query" for x in query[1:])
    # The provider's items stay exactly as they were: the state is staff's.
    provider_lines = await api.lines(invoice["id"], "invoices:submit", inv.header["provider_code"])
    assert all("state" not in x for x in provider_lines)
