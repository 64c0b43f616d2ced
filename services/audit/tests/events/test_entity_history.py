"""GET /v1/entities/{type}/{id}/events: one entity's history (an invoice's with its parts), over both
databases; ids are text, never patterns, whatever the database's collation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from audit_test_support import event_json, execute, make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cef_audit.events.repository import EventFilter, list_events
from cef_audit.log.records import Recorder
from cef_audit.log.sequencer import AuditLog
from cef_common.audit import AuditActor, AuditEntity
from cef_common.db import make_engine
from cef_common.keys import SigningKey

INVOICE = "0b7c2f0e-3a5d-4d7e-9a51-6f0f5c1d2e3a"
OTHER = "5d1e0c4b-9a8f-4e7d-8c6b-5a4f3e2d1c0b"

# (n, entity type, entity id): n is the event's detail.n, its name in these tests.
WORLD: list[tuple[int, str, str]] = [
    (1, "invoice", INVOICE),
    (2, "invoice-line", f"{INVOICE}/L1"),
    (3, "invoice", OTHER),  # another invoice
    (4, "invoice-challenge", f"{INVOICE}/challenge/7"),
    (5, "invoice-line", f"{OTHER}/L1"),  # another invoice's line
    (6, "invoice-payment", f"{INVOICE}/payment/1"),
    (7, "invoice-line", f"{INVOICE}/L2"),  # e.g. a patient.reidentify of the line
    (8, "invoice-export", INVOICE),  # the same id, another type: not the invoice itself
    (9, "invoice-line", f"{INVOICE}0/L1"),  # an id that merely begins like the invoice's
    (10, "invoice-line", f"{INVOICE.upper()}/L1"),  # another case
    (11, "invoice", INVOICE),
    (12, "invoice-line", f"{INVOICE}/L1/extra"),  # a part of a part
    (13, "invoice-challenge", f"{INVOICE}/L1"),  # the line's id under another type
]
HISTORY = [1, 2, 4, 6, 7, 11, 12, 13]


def _event(n: int, entity_type: str, entity_id: str, **overrides: Any) -> dict[str, Any]:
    return event_json(n, entity=AuditEntity(type=entity_type, id=entity_id), detail={"n": n}, **overrides)


async def _seed(client: Any, writer: dict[str, str], world: list[tuple[int, str, str]]) -> None:
    r = await client.post("/v1/events", json={"events": [_event(*e) for e in world]}, headers=writer)
    assert r.status_code == 201, r.text


def _path(entity_type: str, entity_id: str) -> str:
    return f"/v1/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}/events"


async def _history(
    client: Any, reader: dict[str, str], entity_type: str, entity_id: str, **params: Any
) -> Any:
    r = await client.get(_path(entity_type, entity_id), params=params, headers=reader)
    assert r.status_code == 200, r.text
    return r.json()


async def _ns(client: Any, reader: dict[str, str], entity_type: str, entity_id: str) -> list[int]:
    page = await _history(client, reader, entity_type, entity_id, limit=1000)
    assert page["next_cursor"] is None
    return [e["detail"]["n"] for e in page["items"]]


async def test_an_invoices_history_holds_its_lines_challenges_and_payments_oldest_first(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer, WORLD)
    page = await _history(client, reader, "invoice", INVOICE)
    assert [e["detail"]["n"] for e in page["items"]] == HISTORY
    seqs = [e["seq"] for e in page["items"]]
    assert seqs == sorted(seqs)
    # The event shape of GET /v1/events: the record as hashed, plus its hash.
    listed = (await client.get("/v1/events", params={"entity": INVOICE}, headers=reader)).json()["items"]
    assert page["items"][0] == listed[0]
    assert await _ns(client, reader, "invoice", OTHER) == [3, 5]


async def test_other_types_are_that_exact_type_and_id_without_parts(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer, WORLD)
    assert await _ns(client, reader, "invoice-line", f"{INVOICE}/L1") == [2]
    assert await _ns(client, reader, "invoice-challenge", f"{INVOICE}/L1") == [13]
    assert await _ns(client, reader, "invoice-export", INVOICE) == [8]
    assert await _ns(client, reader, "invoice-line", INVOICE) == []
    # The slash of a line's id may also be sent as it is.
    r = await client.get(f"/v1/entities/invoice-line/{INVOICE}/L1/events", headers=reader)
    assert [e["detail"]["n"] for e in r.json()["items"]] == [2]
    r = await client.get(f"/v1/entities/invoice-line/{INVOICE}/L1/extra/events", headers=reader)
    assert [e["detail"]["n"] for e in r.json()["items"]] == [12]


# Ids holding LIKE's wildcards, its escape character, and characters a linguistic collation sorts
# between "X/" and "X0" (ICU: punctuation and symbols before digits; case only at the third level).
AWKWARD = ["a_c", "a%c", "abc", "a\\c", "aXc", "A_c", "a_c0", "a_", "a%", "a"]
SUFFIXES = ["/L1", "#L1", "\\L1", "+L1", "-L1", ".L1", "/", "0"]


def _awkward_world() -> list[tuple[int, str, str]]:
    world: list[tuple[int, str, str]] = []
    for base in AWKWARD:
        world.append((len(world), "invoice", base))
        for suffix in SUFFIXES:
            world.append((len(world), "invoice-line", base + suffix))
    return world


def _expected(world: list[tuple[int, str, str]], wanted: str) -> list[int]:
    return [
        n
        for n, entity_type, entity_id in world
        if (entity_type, entity_id) == ("invoice", wanted) or entity_id.startswith(wanted + "/")
    ]


async def _check_awkward(client: Any, writer: dict[str, str], reader: dict[str, str]) -> None:
    world = _awkward_world()
    await _seed(client, writer, world)
    for wanted in AWKWARD:
        found = await _ns(client, reader, "invoice", wanted)
        assert found == _expected(world, wanted), wanted
        assert len(found) == 3  # the invoice, "/L1" and "/": nothing else matches by accident


async def test_wildcards_escapes_and_case_in_ids_are_plain_text(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _check_awkward(client, writer, reader)


async def test_parts_are_found_under_a_linguistic_collation(
    db_kind: str, audit_db: str, client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    if db_kind != "postgresql":
        pytest.skip("a column collation other than byte order is PostgreSQL's (SQLite compares bytes)")
    # As a database created with en_US.UTF-8 (or ICU) would hold it; a range trick would fail here.
    execute(audit_db, 'ALTER TABLE audit_events ALTER COLUMN entity_id TYPE varchar(255) COLLATE "und-x-icu"')
    await _check_awkward(client, writer, reader)


async def test_pages_follow_the_cursor(client: Any, writer: dict[str, str], reader: dict[str, str]) -> None:
    await _seed(client, writer, WORLD)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = await _history(client, reader, "invoice", INVOICE, **params)
        assert len(page["items"]) <= 3
        seen += [e["detail"]["n"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == HISTORY
    assert pages == 3
    # A cursor of a newest-first listing does not continue an oldest-first history.
    newest = (await client.get("/v1/events", params={"order": "desc", "limit": 1}, headers=reader)).json()
    r = await client.get(_path("invoice", INVOICE), params={"cursor": newest["next_cursor"]}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid-cursor"


async def _own_queries(client: Any, reader: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/v1/events", params={"type": "audit.query", "limit": 1000}, headers=reader)
    return [e for e in r.json()["items"] if e.get("subtype") == "entities.history"]


async def test_the_history_is_itself_audited(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer, WORLD)
    await _history(client, reader, "invoice", INVOICE, purpose="complaint 17", limit=5)
    [query] = await _own_queries(client, reader)
    assert (query["action"], query["outcome"], query["actor"]["sub"]) == ("read", "success", "auditor-1")
    assert query["purpose"] == "complaint 17"
    assert query["entity"]["count"] == 5
    assert query["detail"]["filters"] == {"entity": INVOICE, "entity_type": "invoice", "parts": True}
    assert query["detail"]["limit"] == 5
    await _history(client, reader, "invoice-line", f"{INVOICE}/L1")
    assert (await _own_queries(client, reader))[1]["detail"]["filters"] == {
        "entity": f"{INVOICE}/L1",
        "entity_type": "invoice-line",
    }


@pytest.mark.parametrize("entity_id", ["9434765919", "P9434765919/L1", "LS1 4AP", "1970-01-31"])
async def test_an_id_shaped_like_an_identifier_is_recorded_as_a_digest(
    client: Any, reader: dict[str, str], entity_id: str
) -> None:
    page = await _history(client, reader, "invoice", entity_id)
    assert page == {"items": [], "next_cursor": None}
    [query] = await _own_queries(client, reader)
    recorded = query["detail"]["filters"]["entity"]
    assert set(recorded) == {"digest", "length"}
    assert recorded["length"] == len(entity_id)
    assert entity_id not in str(query)


async def test_a_purpose_holding_an_identifier_is_refused(client: Any, reader: dict[str, str]) -> None:
    r = await client.get(_path("invoice", INVOICE), params={"purpose": "for 943 476 5919"}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "purpose-holds-identifier"
    assert await _own_queries(client, reader) == []


async def test_refusals_are_401_and_403_and_on_record_without_the_id(
    client: Any, writer: dict[str, str], reader: dict[str, str], dev_issuer: Any
) -> None:
    r = await client.get(_path("invoice", INVOICE))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    staff = dev_issuer.headers("invoices:validate", sub="staff-a", org="00C", aud="audit")
    for headers in (writer, staff):
        r = await client.get(_path("invoice", INVOICE), headers=headers)
        assert r.status_code == 403
        assert r.json()["code"] == "insufficient-scope"
    refusals = (await client.get("/v1/events", params={"type": "access.refused"}, headers=reader)).json()[
        "items"
    ]
    assert [e["detail"]["status"] for e in refusals] == [401, 403, 403]
    assert {e["detail"]["route"] for e in refusals} == {"/v1/entities/{entity_type}/{entity_id}/events"}
    assert INVOICE not in str(refusals)
    assert await _own_queries(client, reader) == []


# The rule itself, over ids drawn from the characters that could confuse it, straight against the
# repository (its query, without the HTTP around it).
ALPHABET = "aA_%\\/#0"
POOL = sorted({a + b + c for a in ALPHABET for b in ALPHABET for c in ["", *ALPHABET]})[::7]


@pytest.fixture
def seeded(audit_db: str) -> Iterator[tuple[sa.Engine, list[tuple[int, str, str]]]]:
    engine = make_engine(audit_db)
    world = [(n, "invoice" if n % 3 else "invoice-line", entity_id) for n, entity_id in enumerate(POOL)]
    events = [
        make_event(n, entity=AuditEntity(type=t, id=i), detail={"n": n}, actor=AuditActor(sub="u"))
        for n, t, i in world
    ]
    AuditLog(engine, signing_key=SigningKey.generate()).append(events, recorded_by=Recorder(sub="cef-api"))
    yield engine, world
    engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wanted=st.text(alphabet=ALPHABET, min_size=1, max_size=3))
def test_an_invoices_parts_are_exactly_the_ids_starting_with_its_id_and_a_slash(
    seeded: tuple[sa.Engine, list[tuple[int, str, str]]], wanted: str
) -> None:
    # Read-only over the seeded log: every example sees the same events.
    engine, world = seeded
    items, after = list_events(
        engine, EventFilter(entity=wanted, entity_type="invoice", parts=True), limit=len(world), after=None
    )
    assert after is None
    assert [e["detail"]["n"] for e in items] == _expected(world, wanted)


@pytest.mark.parametrize(
    ("segment", "status"),
    [("a%00b", 422), ("a%FF%FEb", 200), ("x" * 255, 200), ("x" * 256, 422)],
)
async def test_an_id_no_entity_can_have_is_answered_not_failed(
    client: Any, reader: dict[str, str], segment: str, status: int
) -> None:
    # PostgreSQL's text holds no NUL; bytes that are not UTF-8, or an id over 255, are in no event.
    r = await client.get(f"/v1/entities/invoice/{segment}/events", headers=reader)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json() == {"items": [], "next_cursor": None}
