"""The listing filters with a fixed set of values (invoice `status`, line `outcome`): every spelling
that worked before still works, and a value outside the set is a problem naming the parameter."""

from __future__ import annotations

import generate_world
import pytest
from api_support import Api


@pytest.fixture
async def submitted(sqlite_api: Api, world: generate_world.World) -> tuple[Api, dict, dict[str, str]]:
    await sqlite_api.load_world(world)
    inv = world.invoices[0]
    r = await sqlite_api.submit(inv.header, inv.backing)
    assert r.status_code == 201
    invoice = r.json()
    assert invoice["status"] == "validated"
    return sqlite_api, invoice, sqlite_api.h("invoices:read", org=inv.header["commissioner_code"])


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ({"status": "validated"}, True),
        ({"status": "approved,validated"}, True),
        ({"status": "approved, validated"}, True),
        ([("status", "approved"), ("status", "validated")], True),
        ({"status": ""}, True),
        ({}, True),
        ({"status": "approved"}, False),
        ({"status": "approved,part-approved,rejected,failed,received,validating"}, False),
    ],
)
async def test_status_takes_one_value_a_comma_separated_list_or_repeated_values(
    submitted: tuple[Api, dict, dict[str, str]], params: object, found: bool
) -> None:
    api, invoice, finance = submitted
    r = await api.client.get("/v1/invoices", params=params, headers=finance)
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == ([invoice["id"]] if found else [])


@pytest.mark.parametrize("value", ["settled", "validated,settled", "VALIDATED"])
async def test_a_status_outside_the_set_is_a_problem_naming_the_parameter(
    submitted: tuple[Api, dict, dict[str, str]], value: str
) -> None:
    api, _, finance = submitted
    r = await api.client.get("/v1/invoices", params={"status": value}, headers=finance)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "validation-error"
    assert problem["errors"][0]["field"].startswith("status")
    assert value not in r.text  # the rejected value is not echoed


async def test_outcome_lists_lines_of_one_outcome_and_refuses_any_other_value(
    submitted: tuple[Api, dict, dict[str, str]], world: generate_world.World
) -> None:
    api, invoice, _ = submitted
    provider = api.h("invoices:submit", org=world.invoices[0].header["provider_code"])
    url = f"/v1/invoices/{invoice['id']}/lines"
    for outcome in ("valid", "query", "rejected"):
        r = await api.client.get(url, params={"outcome": outcome, "limit": 5000}, headers=provider)
        assert r.status_code == 200
        assert {line["outcome"] for line in r.json()["items"]} <= {outcome}
    r = await api.client.get(url, params={"outcome": "accepted"}, headers=provider)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "outcome"
