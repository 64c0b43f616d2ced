"""The token endpoints over HTTP: authorisation, determinism, contexts, rotation, re-identification, audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from tokeniser_test_support import WORK

from cef_common.testing import app_client
from cef_tokeniser.config import Settings
from cef_tokeniser.keys import KeyRing
from cef_tokeniser.main import create_app

NHS = ["9999083013", "9999099602", "9992199350", "9992319488"]
ENDPOINTS = {
    "/v1/tokenise": {"kind": "nhs_number", "values": NHS},
    "/v1/retokenise": {"kind": "nhs_number", "tokens": ["N1.AAAAAAAAAAAAAAAAAAAAAAAA"]},
    "/v1/detokenise": {"kind": "nhs_number", "tokens": ["N1.AAAAAAAAAAAAAAAAAAAAAAAA"], "purpose": "query"},
}
SCOPE_OF = {"/v1/tokenise": "tokenise", "/v1/retokenise": "tokenise", "/v1/detokenise": "detokenise"}


async def tokenise(client: Any, headers: Any, kind: str, values: list[Any], **extra: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/tokenise", json={"kind": kind, "values": values, **extra}, headers=headers("tokenise")
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def detokenise(client: Any, headers: Any, kind: str, tokens: list[Any], **extra: Any) -> Any:
    """Re-identifies as the only caller allowed to: the CEF API's own token, for a person and a line."""
    body = {"kind": kind, "tokens": tokens, "purpose": "resolve-query", **WORK, **extra}
    return await client.post("/v1/detokenise", json=body, headers=headers("detokenise", peer=True))


# --- authentication and authorisation ---------------------------------------------------------------


@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_every_endpoint_needs_a_valid_token(client: Any, path: str, stranger_key: Any) -> None:
    from cef_common.auth import TokenSigner

    assert (await client.post(path, json=ENDPOINTS[path])).status_code == 401
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert (await client.post(path, json=ENDPOINTS[path], headers=bad)).status_code == 401
    forged = TokenSigner(stranger_key, "cef-dev").mint(
        sub="x", audience="tokeniser", scopes=[SCOPE_OF[path]], ttl_seconds=60, client="tests"
    )
    r = await client.post(path, json=ENDPOINTS[path], headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_every_endpoint_needs_its_scope(client: Any, headers: Any, path: str) -> None:
    other = {"tokenise": "detokenise", "detokenise": "tokenise"}[SCOPE_OF[path]]
    r = await client.post(path, json=ENDPOINTS[path], headers=headers(f"{other} audit:read"))
    assert r.status_code == 403
    assert SCOPE_OF[path] in r.json()["detail"]


async def test_a_token_for_another_service_is_refused(client: Any, dev_issuer: Any) -> None:
    token = dev_issuer.token("tokenise", aud="cef-api")
    r = await client.post(
        "/v1/tokenise", json=ENDPOINTS["/v1/tokenise"], headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401


@pytest.mark.parametrize("path", ["/v1/tokenise", "/v1/retokenise"])
async def test_contexts_are_allowed_per_client(client: Any, headers: Any, path: str, events_of: Any) -> None:
    body = {**ENDPOINTS[path], "context": "research"}
    # Client cef-api may only use context cef; client tests may use cef and research.
    r = await client.post(path, json=body, headers=headers(SCOPE_OF[path], client="cef-api"))
    assert r.status_code == 403
    assert r.json()["code"] == "context-not-allowed"
    assert "research" in r.json()["detail"]
    r = await client.post(path, json=body, headers=headers(SCOPE_OF[path], client="unknown-client"))
    assert r.status_code == 403
    r = await client.post(path, json=body, headers=headers(SCOPE_OF[path]))
    assert r.status_code == 200, r.text
    type_ = {"/v1/tokenise": "patient.tokenise", "/v1/retokenise": "patient.retokenise"}[path]
    outcomes = [(e["outcome"], e["actor"]["client"]) for e in events_of(client.app, type_)]
    assert outcomes == [("denied", "cef-api"), ("denied", "unknown-client"), ("success", "tests")]


async def test_the_peer_re_identifies_only_in_its_own_contexts(
    client: Any, headers: Any, events_of: Any
) -> None:
    r = await detokenise(client, headers, "nhs_number", [], context="research")
    assert r.status_code == 403
    assert r.json()["code"] == "context-not-allowed"
    assert (await detokenise(client, headers, "nhs_number", [])).status_code == 200
    outcomes = [(e["outcome"], e["actor"]["client"]) for e in events_of(client.app, "patient.detokenise")]
    assert outcomes == [("denied", "cef-api"), ("success", "cef-api")]


@pytest.mark.parametrize(
    "who",
    [
        {"client": None},  # a person's token (client tests) with the scope
        {"client": "cef-api"},  # claims to be the CEF API, but issued by the development issuer
        {"client": "cef-cli", "sub": "cef-api"},
    ],
)
async def test_detokenise_is_refused_to_anyone_but_a_configured_peer_and_audited(
    client: Any, headers: Any, events_of: Any, who: dict[str, Any]
) -> None:
    tokens = (await tokenise(client, headers, "nhs_number", NHS))["tokens"]
    body = {"kind": "nhs_number", "tokens": tokens, "purpose": "resolve-query", **WORK}
    r = await client.post("/v1/detokenise", json=body, headers=headers("detokenise", **who))
    assert r.status_code == 403
    assert r.json()["code"] == "detokenise-not-allowed"
    assert not any(n in r.text for n in NHS)
    [event] = events_of(client.app, "patient.detokenise")
    assert event["outcome"] == "denied"
    assert event["detail"]["reason"] == "detokenise-not-allowed"
    assert event["actor"]["issuer"] == "cef-dev"
    # What a caller that is not the peer says it acts for is not taken at its word: only a digest.
    assert event["detail"]["invoice_id"] == WORK["invoice_id"]
    assert set(event["detail"]["on_behalf_of"]) == {"digest", "length"}
    assert set(event["detail"]["line_ref"]) == {"digest", "length"}


async def test_the_peers_that_may_detokenise_are_a_setting(
    sqlite_url: str, make_settings: Callable[..., Settings], headers: Any
) -> None:
    app = create_app(make_settings(sqlite_url, detokenise_clients=["billing-service"]))
    async with app_client(app) as c:
        r = await detokenise(c, headers, "nhs_number", [])
    assert r.status_code == 403
    assert r.json()["code"] == "detokenise-not-allowed"
    with pytest.raises(ValueError, match="development issuer"):
        make_settings(sqlite_url, detokenise_clients=["cef-dev"])


async def test_the_client_id_falls_back_to_the_subject(
    sqlite_url: str, make_settings: Callable[..., Settings], dev_issuer: Any
) -> None:
    app = create_app(make_settings(sqlite_url, client_contexts={"etl-job": ["cef"]}))
    token = dev_issuer.signer.mint(sub="etl-job", audience="tokeniser", scopes=["tokenise"], ttl_seconds=60)
    async with app_client(app) as c:
        r = await c.post(
            "/v1/tokenise",
            json={"kind": "postcode", "values": ["TS18 1HU"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text


# --- tokenising -------------------------------------------------------------------------------------


async def test_tokens_are_deterministic_distinct_and_in_input_order(db_client: Any, headers: Any) -> None:
    first = await tokenise(db_client, headers, "nhs_number", NHS)
    again = await tokenise(db_client, headers, "nhs_number", list(reversed(NHS)))
    assert first["tokens"] == list(reversed(again["tokens"]))
    assert len(set(first["tokens"])) == len(NHS)
    assert first["kind"] == "nhs_number"
    assert first["context"] == "cef"
    assert first["key_version"] == 1
    assert first["errors"] == []
    assert "outward_codes" not in first
    for token in first["tokens"]:
        assert token.startswith("N1.")
        assert token.isascii()
        assert len(token) <= 64
        assert not any(n in token for n in NHS)


async def test_tokens_survive_a_restart(
    db_url: str, make_settings: Callable[..., Settings], headers: Any, dev_issuer: Any
) -> None:
    settings = make_settings(db_url)
    async with app_client(create_app(settings)) as c:
        before = await tokenise(c, headers, "date_of_birth", ["1969-09-01"])
    async with app_client(create_app(settings)) as c:
        after = await tokenise(c, headers, "date_of_birth", [" 1969-09-01 "])
        values = (await detokenise(c, headers, "date_of_birth", before["tokens"])).json()["values"]
    assert before["tokens"] == after["tokens"]
    assert values == ["1969-09-01"]


async def test_accepted_forms_give_the_same_token(client: Any, headers: Any) -> None:
    nhs = await tokenise(
        client, headers, "nhs_number", ["9434765919", "943 476 5919", "943-476-5919", " 9434765919\t"]
    )
    assert len(set(nhs["tokens"])) == 1
    postcodes = await tokenise(client, headers, "postcode", ["TS18 1HU", "ts181hu", " Ts18  1hU "])
    assert len(set(postcodes["tokens"])) == 1
    assert postcodes["outward_codes"] == ["TS18", "TS18", "TS18"]


async def test_kinds_do_not_share_tokens(client: Any, headers: Any) -> None:
    nhs = await tokenise(client, headers, "nhs_number", ["9434765919"])
    dob = await tokenise(client, headers, "date_of_birth", ["1970-01-01"])
    pc = await tokenise(client, headers, "postcode", ["TS18 1HU"])
    assert [nhs["tokens"][0][0], dob["tokens"][0][0], pc["tokens"][0][0]] == ["N", "D", "P"]
    # A token of one kind is not accepted as another kind.
    r = await detokenise(client, headers, "postcode", nhs["tokens"])
    assert r.json() == {"values": [None], "errors": [{"index": 0, "code": "token_invalid"}]}


async def test_the_same_value_in_two_contexts_gives_unlinkable_tokens(
    db_url: str, make_settings: Callable[..., Settings], headers: Any
) -> None:
    contexts = {"tests": ["cef", "research"], "cef-api": ["cef", "research"]}
    async with app_client(create_app(make_settings(db_url, client_contexts=contexts))) as db_client:
        await _unlinkable(db_client, headers)


async def _unlinkable(db_client: Any, headers: Any) -> None:
    cef = await tokenise(db_client, headers, "nhs_number", NHS)
    research = await tokenise(db_client, headers, "nhs_number", NHS, context="research")
    assert research["context"] == "research"
    assert set(cef["tokens"]).isdisjoint(research["tokens"])
    # Tokens of one context are unknown in the other.
    r = await detokenise(db_client, headers, "nhs_number", cef["tokens"], context="research")
    assert r.json()["values"] == [None] * len(NHS)
    assert {e["code"] for e in r.json()["errors"]} == {"token_unknown"}
    r = await detokenise(db_client, headers, "nhs_number", research["tokens"], context="research")
    assert r.json()["values"] == NHS


async def test_invalid_values_of_every_kind_get_null_and_the_rest_succeeds(client: Any, headers: Any) -> None:
    cases = {
        "nhs_number": (["9434765919", "9434765918", None, "", 12, "943 476 5919"], "nhs_number_invalid"),
        "date_of_birth": (["1970-01-01", "1970-02-30", None, " ", ["x"], "1970-01-01"], "date_invalid"),
        "postcode": (["TS18 1HU", "TS18", None, "", {"a": 1}, "ts181hu"], "postcode_invalid"),
    }
    for kind, (values, invalid) in cases.items():
        result = await tokenise(client, headers, kind, values)
        tokens = result["tokens"]
        assert tokens[0] is not None
        assert tokens[0] == tokens[5]
        assert tokens[1:5] == [None, None, None, None]
        assert result["errors"] == [
            {"index": 1, "code": invalid},
            {"index": 2, "code": "missing"},
            {"index": 3, "code": "missing"},
            {"index": 4, "code": "not_a_string"},
        ]
        if kind == "postcode":
            assert result["outward_codes"] == ["TS18", None, None, None, None, "TS18"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (orjson.dumps({"values": ["9434765919"]}), "kind"),
        (orjson.dumps({"kind": "passport", "values": []}), "kind"),
        (orjson.dumps({"kind": "nhs_number", "values": "9434765919"}), "values"),
        (orjson.dumps({"kind": "nhs_number"}), "values"),
        (orjson.dumps({"kind": "nhs_number", "values": [], "context": 5}), "context"),
        (orjson.dumps({"kind": "nhs_number", "values": [], "key_version": 0}), "key_version"),
        (orjson.dumps({"kind": "nhs_number", "values": [], "key_version": "1"}), "key_version"),
    ],
)
async def test_malformed_requests_say_which_field_to_fix(
    client: Any, headers: Any, body: bytes, field: str
) -> None:
    r = await client.post(
        "/v1/tokenise", content=body, headers={**headers("tokenise"), "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["errors"][0]["field"] == field
    assert "9434765919" not in r.text


async def test_an_empty_batch_is_fine(client: Any, headers: Any) -> None:
    assert (await tokenise(client, headers, "postcode", []))["tokens"] == []


async def test_oversized_requests_get_413(
    sqlite_url: str, make_settings: Callable[..., Settings], headers: Any, dev_issuer: Any
) -> None:
    app = create_app(make_settings(sqlite_url, max_body_bytes=10_000, max_batch_values=50))
    async with app_client(app) as c:
        big = {"kind": "nhs_number", "values": ["9434765919"] * 2000}
        r = await c.post("/v1/tokenise", json=big, headers=headers("tokenise"))
        assert r.status_code == 413
        many = {"kind": "nhs_number", "values": [None] * 51}
        r = await c.post("/v1/tokenise", json=many, headers=headers("tokenise"))
        assert r.status_code == 413
        assert "at most 50" in r.json()["detail"]
        r = await c.post(
            "/v1/detokenise",
            json={"kind": "nhs_number", "tokens": [None] * 51, "purpose": "x", **WORK},
            headers=headers("detokenise", peer=True),
        )
        assert r.status_code == 413


async def test_a_batch_of_100000_values(db_client: Any, headers: Any) -> None:
    import random

    rng = random.Random(7)
    values = []
    while len(values) < 100_000:
        nine = "999" + f"{rng.randrange(10**6):06d}"
        check = 11 - sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True)) % 11
        if check != 10:
            values.append(nine + str(0 if check == 11 else check))
    first = await tokenise(db_client, headers, "nhs_number", values)
    assert len(first["tokens"]) == 100_000
    assert first["errors"] == []
    again = await tokenise(db_client, headers, "nhs_number", values)
    assert again["tokens"] == first["tokens"]
    distinct = len(set(values))
    with db_client.app.state.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM token_original")).scalar_one()
    assert stored == distinct
    sample = [first["tokens"][i] for i in range(0, 100_000, 9973)]
    r = await detokenise(db_client, headers, "nhs_number", sample)
    assert r.json()["values"] == [values[i] for i in range(0, 100_000, 9973)]


async def test_originals_are_stored_once_per_distinct_value(db_client: Any, headers: Any) -> None:
    await tokenise(db_client, headers, "nhs_number", NHS + NHS)
    await tokenise(db_client, headers, "nhs_number", NHS[:2])
    db_client.app.state.token_service.cache.clear()  # as after a restart: the database decides
    await tokenise(db_client, headers, "nhs_number", ["943 476 5919", *NHS])
    with db_client.app.state.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM token_original")).scalar_one()
    assert stored == len(NHS) + 1


async def test_each_tokenise_call_is_one_audit_event_without_values(
    client: Any, headers: Any, events_of: Any, outbox_events: Any
) -> None:
    await tokenise(client, headers, "nhs_number", NHS + ["bad"])
    await tokenise(client, headers, "postcode", ["TS18 1HU"], context="research")
    events = events_of(client.app, "patient.tokenise")
    assert [(e["action"], e["outcome"], e["entity"]["count"], e["detail"]["context"]) for e in events] == [
        ("execute", "success", 5, "cef"),
        ("execute", "success", 1, "research"),
    ]
    assert events[0]["detail"]["invalid"] == 1
    assert events[0]["actor"]["sub"] == "tester"
    everything = orjson.dumps(outbox_events(client.app)).decode()
    assert not any(n in everything for n in NHS)
    assert "TS18 1HU" not in everything


# --- key versions, rotation, re-tokenising ----------------------------------------------------------


def _rotate(app: Any, kind: str, context: str = "cef") -> int:
    ring: KeyRing = app.state.token_service.keyring
    return ring.rotate(kind, context)


async def test_rotation_and_retokenise_round_trip(db_client: Any, headers: Any) -> None:
    v1 = await tokenise(db_client, headers, "nhs_number", NHS)
    assert _rotate(db_client.app, "nhs_number") == 2
    v2 = await tokenise(db_client, headers, "nhs_number", NHS)
    assert v2["key_version"] == 2
    assert all(t.startswith("N2.") for t in v2["tokens"])
    assert set(v1["tokens"]).isdisjoint(v2["tokens"])
    # Old tokens still resolve.
    r = await detokenise(db_client, headers, "nhs_number", v1["tokens"] + v2["tokens"])
    assert r.json()["values"] == NHS + NHS
    # Old tokens can still be issued on request, for a recipient not yet re-keyed.
    assert (await tokenise(db_client, headers, "nhs_number", NHS, key_version=1))["tokens"] == v1["tokens"]
    r = await db_client.post(
        "/v1/retokenise",
        json={
            "kind": "nhs_number",
            "tokens": [
                v1["tokens"][0],
                None,
                v2["tokens"][1],
                "N1.AAAAAAAAAAAAAAAAAAAAAAAA",
                "garbage",
                v1["tokens"][2],
            ],
        },
        headers=headers("tokenise"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "nhs_number"
    assert body["key_version"] == 2
    assert body["tokens"] == [v2["tokens"][0], None, v2["tokens"][1], None, None, v2["tokens"][2]]
    assert body["errors"] == [
        {"index": 1, "code": "missing"},
        {"index": 3, "code": "token_unknown"},
        {"index": 4, "code": "token_invalid"},
    ]
    assert not any(n in r.text for n in NHS)


async def test_retokenised_tokens_resolve_after_a_second_rotation(db_client: Any, headers: Any) -> None:
    v1 = await tokenise(db_client, headers, "postcode", ["TS18 1HU", "LS1 4AP"])
    _rotate(db_client.app, "postcode")
    _rotate(db_client.app, "postcode")
    r = await db_client.post(
        "/v1/retokenise", json={"kind": "postcode", "tokens": v1["tokens"]}, headers=headers("tokenise")
    )
    v3 = r.json()["tokens"]
    assert r.json()["key_version"] == 3
    assert all(t.startswith("P3.") for t in v3)
    assert v3 == (await tokenise(db_client, headers, "postcode", ["ts18 1hu", "ls14ap"]))["tokens"]
    assert (await detokenise(db_client, headers, "postcode", v3)).json()["values"] == ["TS18 1HU", "LS1 4AP"]


async def test_rotation_in_one_context_leaves_the_others(client: Any, headers: Any) -> None:
    research = await tokenise(client, headers, "nhs_number", NHS, context="research")
    await tokenise(client, headers, "nhs_number", NHS)
    _rotate(client.app, "nhs_number", "cef")
    again = await tokenise(client, headers, "nhs_number", NHS, context="research")
    assert again["key_version"] == 1
    assert again["tokens"] == research["tokens"]


async def test_an_unknown_key_version_is_refused(client: Any, headers: Any) -> None:
    await tokenise(client, headers, "nhs_number", NHS)
    r = await client.post(
        "/v1/tokenise",
        json={"kind": "nhs_number", "values": NHS, "key_version": 7},
        headers=headers("tokenise"),
    )
    assert r.status_code == 422
    assert r.json()["code"] == "unknown-key-version"
    assert "current version is 1" in r.json()["detail"]


async def test_retokenise_is_audited(client: Any, headers: Any, events_of: Any) -> None:
    v1 = await tokenise(client, headers, "nhs_number", NHS)
    _rotate(client.app, "nhs_number")
    await client.post(
        "/v1/retokenise", json={"kind": "nhs_number", "tokens": v1["tokens"]}, headers=headers("tokenise")
    )
    [event] = events_of(client.app, "patient.retokenise")
    assert event["entity"]["count"] == len(NHS)
    assert event["detail"]["rekeyed"] == len(NHS)
    assert event["detail"]["key_version"] == 2


# --- re-identification -------------------------------------------------------------------------------


async def test_detokenise_returns_originals_in_order_and_nulls_unknown_tokens(
    db_client: Any, headers: Any
) -> None:
    tokens = (await tokenise(db_client, headers, "nhs_number", ["943-476-5919", *NHS]))["tokens"]
    asked = [
        tokens[1],
        "N1.AAAAAAAAAAAAAAAAAAAAAAAA",
        None,
        tokens[0],
        "N9.AAAAAAAAAAAAAAAAAAAAAAAA",
        5,
        tokens[1],
    ]
    r = await detokenise(db_client, headers, "nhs_number", asked)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "values": [NHS[0], None, None, "9434765919", None, None, NHS[0]],
        "errors": [
            {"index": 1, "code": "token_unknown"},
            {"index": 2, "code": "missing"},
            {"index": 4, "code": "token_unknown"},
            {"index": 5, "code": "not_a_string"},
        ],
    }


async def test_detokenise_is_audited_with_caller_purpose_and_count(
    client: Any, headers: Any, events_of: Any
) -> None:
    tokens = (await tokenise(client, headers, "nhs_number", NHS))["tokens"]
    r = await detokenise(client, headers, "nhs_number", tokens, purpose="  resolve a query on invoice 42 ")
    assert r.status_code == 200
    [event] = events_of(client.app, "patient.detokenise")
    assert event["outcome"] == "success"
    assert event["action"] == "execute"
    assert event["purpose"] == "resolve a query on invoice 42"
    assert event["entity"] == {"type": "patient_token", "id": None, "count": len(NHS)}
    assert event["actor"]["sub"] == "cef-api"
    assert event["actor"]["client"] == "cef-api"
    # The person the peer acted for, the invoice, the line: the work the identities were given for.
    assert event["detail"] == {
        "kind": "nhs_number",
        "context": "cef",
        "resolved": len(NHS),
        "unresolved": 0,
        "on_behalf_of": WORK["on_behalf_of"],
        "invoice_id": WORK["invoice_id"],
        "line_ref": WORK["line_ref"],
    }
    assert event["request_id"] == r.headers["x-request-id"]
    assert not any(n in orjson.dumps(event).decode() for n in NHS)


@pytest.mark.parametrize(
    ("scope", "change", "status", "reason"),
    [
        ("tokenise", {}, 403, "insufficient-scope"),
        ("detokenise", {"purpose": ""}, 422, "validation-error"),
        ("detokenise", {"purpose": "   "}, 422, "validation-error"),
        ("detokenise", {"purpose": None}, 422, "validation-error"),
        ("detokenise", {"purpose": "x" * 1001}, 422, "validation-error"),
        ("detokenise", {"context": "elsewhere"}, 403, "context-not-allowed"),
        ("detokenise", {"kind": "passport"}, 422, "validation-error"),
        ("detokenise", {"tokens": "N1.x"}, 422, "validation-error"),
        ("detokenise", {"on_behalf_of": None}, 422, "validation-error"),
        ("detokenise", {"on_behalf_of": {"sub": "staff-1"}}, 422, "validation-error"),
        ("detokenise", {"invoice_id": "9434765919"}, 422, "validation-error"),
        ("detokenise", {"line_ref": ""}, 422, "validation-error"),
    ],
)
async def test_refused_detokenise_calls_are_audited_and_return_no_values(
    client: Any, headers: Any, events_of: Any, scope: str, change: dict[str, Any], status: int, reason: str
) -> None:
    tokens = (await tokenise(client, headers, "nhs_number", NHS))["tokens"]
    body = {"kind": "nhs_number", "tokens": tokens, "purpose": "curiosity", **WORK, **change}
    r = await client.post("/v1/detokenise", json=body, headers=headers(scope, peer=True))
    assert r.status_code == status
    assert not any(n in r.text for n in NHS)
    [event] = events_of(client.app, "patient.detokenise")
    assert event["outcome"] == "denied"
    assert event["detail"]["reason"] == reason
    assert event["actor"]["sub"] == "cef-api"
    assert "9434765919" not in orjson.dumps(event).decode()
    if isinstance(change.get("tokens", tokens), list):
        assert event["entity"]["count"] == len(NHS)


async def test_no_values_when_the_audit_event_cannot_be_recorded(db_client: Any, headers: Any) -> None:
    tokens = (await tokenise(db_client, headers, "nhs_number", NHS))["tokens"]
    with db_client.app.state.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_outbox"))
    r = await detokenise(db_client, headers, "nhs_number", tokens)
    assert r.status_code == 503
    assert r.json()["code"] == "audit-unavailable"
    assert not any(n in r.text for n in NHS)
    # Tokenising records its event with its originals: it fails whole, and issues nothing.
    r = await db_client.post(
        "/v1/tokenise", json={"kind": "nhs_number", "values": ["943 476 5919"]}, headers=headers("tokenise")
    )
    assert r.status_code == 503
    assert "tokens" not in r.json()
    with db_client.app.state.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM token_original")).scalar_one()
    assert stored == len(NHS)


async def test_no_key_or_identifier_in_responses_or_logs(
    client: Any, headers: Any, master_key_hex: str
) -> None:
    import io
    import logging

    # The service's log output, exactly as it would reach stderr.
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    log_output = io.StringIO()
    previous = handler.setStream(log_output)
    try:
        await _exercise_everything(client, headers, master_key_hex, log_output)
    finally:
        handler.setStream(previous)


async def _exercise_everything(client: Any, headers: Any, master_key_hex: str, log_output: Any) -> None:
    tokens = (await tokenise(client, headers, "nhs_number", NHS))["tokens"]
    pcs = (await tokenise(client, headers, "postcode", ["TS18 1HU", "nonsense"]))["tokens"]
    _rotate(client.app, "nhs_number")
    texts = []
    for r in [
        await client.post(
            "/v1/retokenise", json={"kind": "nhs_number", "tokens": tokens}, headers=headers("tokenise")
        ),
        await detokenise(client, headers, "postcode", pcs, purpose=""),
        await client.post(
            "/v1/tokenise",
            json={"kind": "nhs_number", "values": NHS, "key_version": 9},
            headers=headers("tokenise"),
        ),
        await client.get("/openapi.json"),
    ]:
        texts.append(r.text)
    ring: KeyRing = client.app.state.token_service.keyring
    data_keys = []
    with client.app.state.engine.connect() as conn:
        for kind, context, version, wrapped in conn.execute(
            sa.text("SELECT kind, context, version, wrapped_key FROM data_key")
        ):
            data_keys.append(
                ring.master.unwrap(bytes(wrapped), kind=kind, context=context, version=version).hex()
            )
    logs = log_output.getvalue()
    haystack = "\n".join([*texts, logs])
    assert "/v1/retokenise" in logs  # the service's log lines are in what is searched
    assert master_key_hex not in haystack
    assert data_keys
    assert not any(k in haystack for k in data_keys)
    assert not any(n in haystack for n in NHS)
    assert "TS18 1HU" not in haystack


async def test_openapi_documents_the_bodies(client: Any) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ENDPOINTS:
        assert "requestBody" in spec["paths"][path]["post"]
    tokenise_body = spec["paths"]["/v1/tokenise"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert tokenise_body == {"$ref": "#/components/schemas/TokeniseRequest"}
    model = spec["components"]["schemas"]["TokeniseRequest"]
    assert set(model["properties"]) == {"kind", "values", "context", "key_version"}
    # A nested model of a body read by hand is a component too (the document has no dangling ref).
    assert "OnBehalfOf" in spec["components"]["schemas"]


async def test_a_refused_request_records_only_a_configured_context_by_name(
    client: Any, headers: Any, events_of: Any
) -> None:
    body = {"kind": "nhs_number", "tokens": [], "purpose": "p", "context": "9434765919 Jane Doe"}
    r = await client.post("/v1/detokenise", json=body, headers=headers("detokenise"))
    assert r.status_code == 403
    r = await client.post(
        "/v1/tokenise",
        json={"kind": "postcode", "values": [], "context": "TS18 1HU"},
        headers=headers("tokenise"),
    )
    assert r.status_code == 403
    # Well formed as a context name, yet an NHS number's shape: not configured, so a digest.
    r = await client.post(
        "/v1/tokenise",
        json={"kind": "nhs_number", "values": [], "context": "9990394083"},
        headers=headers("tokenise"),
    )
    assert r.status_code == 403
    events = events_of(client.app, "patient.detokenise") + events_of(client.app, "patient.tokenise")
    assert [e["detail"]["context"]["length"] for e in events] == [19, 8, 10]
    dumped = orjson.dumps(events).decode()
    for value in ("9434765919", "TS18 1HU", "9990394083"):
        assert value not in dumped
    # Exactly one event each: the router's own, not a second one from the shared refusal auditor.
    assert events_of(client.app, "access.refused") == []
    r = await client.post("/v1/detokenise", json={**body, "context": "cef"}, headers=headers("detokenise"))
    assert r.status_code == 403
    assert events_of(client.app, "patient.detokenise")[-1]["detail"]["context"] == "cef"


@pytest.mark.parametrize(
    ("path", "scope", "own_type"),
    [
        ("/v1/tokenise", "detokenise", None),
        ("/v1/retokenise", "detokenise", None),
        ("/v1/detokenise", "tokenise", "patient.detokenise"),
    ],
)
async def test_each_refusal_is_recorded_exactly_once(
    client: Any, headers: Any, events_of: Any, dev_issuer: Any, path: str, scope: str, own_type: str | None
) -> None:
    body = {"kind": "nhs_number", "values": ["9990394083"], "tokens": [], "purpose": "9990394083"}
    r = await client.post(path, json=body, headers=headers(scope))
    assert r.status_code == 403
    shared = events_of(client.app, "access.refused")
    if own_type is None:
        # Refused by the route's scope guard: the shared refusal auditor's event.
        [event] = shared
        assert (event["detail"]["route"], event["detail"]["reason"]) == (path, "insufficient-scope")
    else:
        # The route audits its own refusals, so the shared auditor records nothing more.
        assert shared == []
        assert len(events_of(client.app, own_type)) == 1
    r = await client.post(path, json=body, headers=dev_issuer.headers(scope, aud="cef-api"))
    assert r.status_code == 401
    assert events_of(client.app, "access.refused")[-1]["detail"]["reason"] == "wrong-audience"
    assert "9990394083" not in orjson.dumps(events_of(client.app, "access.refused")).decode()
    if own_type is not None:
        assert "9990394083" not in orjson.dumps(events_of(client.app, own_type)).decode()
