"""POST /v1/events, GET /v1/events and the exports, over both databases."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from typing import Any

import orjson
from audit_test_support import event_json

from cef_audit.canonical import canonical_json


async def _append(client: Any, writer: dict[str, str], events: list[dict[str, Any]]) -> Any:
    r = await client.post("/v1/events", json={"events": events}, headers=writer)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def test_single_and_batch_appends_get_consecutive_seqs(client: Any, writer: dict[str, str]) -> None:
    one = event_json(0)
    r = await client.post("/v1/events", json=one, headers=writer)
    assert r.status_code == 201
    assert r.json() == {"results": [{"event_id": one["event_id"], "seq": 1, "duplicate": False}], "length": 1}
    batch = [event_json(i) for i in range(1, 4)]
    body = await _append(client, writer, batch)
    assert [x["seq"] for x in body["results"]] == [2, 3, 4]
    assert body["length"] == 4


async def test_redelivery_is_never_stored_twice(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    batch = [event_json(i) for i in range(3)]
    await _append(client, writer, batch)
    r = await client.post("/v1/events", json={"events": [*batch, event_json(9)]}, headers=writer)
    assert r.status_code == 201
    assert [(x["seq"], x["duplicate"]) for x in r.json()["results"]] == [
        (1, True),
        (2, True),
        (3, True),
        (4, False),
    ]
    again = await client.post("/v1/events", json=batch[0], headers=writer)
    assert again.status_code == 200
    assert again.json()["results"][0] == {
        "event_id": batch[0]["event_id"],
        "seq": 1,
        "duplicate": True,
    }
    # The same event twice within one batch is one event.
    twice = event_json(20)
    body = await _append(client, writer, [twice, twice])
    assert [(x["seq"], x["duplicate"]) for x in body["results"]] == [(5, False), (5, True)]
    page = (await client.get("/v1/events", params={"source": "cef-api"}, headers=reader)).json()
    assert [e["seq"] for e in page["items"]] == [1, 2, 3, 4, 5]


async def test_same_event_id_with_other_content_is_409(client: Any, writer: dict[str, str]) -> None:
    original = event_json(1)
    await _append(client, writer, [original])
    altered = {**original, "outcome": "failure"}
    r = await client.post("/v1/events", json={"events": [event_json(2), altered]}, headers=writer)
    assert r.status_code == 409
    assert r.json()["code"] == "event-id-conflict"
    assert r.json()["seq"] == 1
    # Nothing of the refused batch was stored.
    assert client.app.state.audit_log.head().length == 1


async def test_the_caller_is_recorded_beside_the_declared_actor(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _append(client, writer, [event_json(1)])
    item = (await client.get("/v1/events", headers=reader)).json()["items"][0]
    assert item["actor"] == {"sub": "user-1", "org": "RX1", "client": "portal", "issuer": None}
    assert item["recorded_by"]["sub"] == "cef-api"
    assert item["recorded_by"]["issuer"] == "cef-dev"


async def test_invalid_events_are_422_naming_the_field(client: Any, writer: dict[str, str]) -> None:
    bad = event_json(1)
    bad["action"] = "erase"
    r = await client.post("/v1/events", json={"events": [event_json(0), bad]}, headers=writer)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("events.1.action")
    r = await client.post("/v1/events", json={**event_json(2), "actor": {}}, headers=writer)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("actor.sub")
    r = await client.post("/v1/events", json={"events": []}, headers=writer)
    assert r.status_code == 422
    r = await client.post(
        "/v1/events", content=b"not json", headers={**writer, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid-json"
    r = await client.post("/v1/events", json={**event_json(3), "detail": {"big": 2**60}}, headers=writer)
    assert r.status_code == 422
    assert r.json()["code"] == "not-canonicalisable"
    assert client.app.state.audit_log.head().length == 0


async def test_batches_are_bounded(client: Any, writer: dict[str, str]) -> None:
    client.app.state.settings.max_batch_events = 3
    r = await client.post("/v1/events", json={"events": [event_json(i) for i in range(4)]}, headers=writer)
    assert r.status_code == 413
    huge = b'{"events":[' + b",".join([orjson.dumps(event_json(1))] * 1) + b"]}" + b" " * (33 * 1024 * 1024)
    r = await client.post("/v1/events", content=huge, headers={**writer, "content-type": "application/json"})
    assert r.status_code == 413


async def test_floats_in_detail_are_canonicalised_exactly(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _append(client, writer, [event_json(1, detail={"ratio": 1e21, "x": 0.1, "é": [1.5]})])
    item = (await client.get("/v1/events", headers=reader)).json()["items"][0]
    digest = item.pop("hash")
    assert hashlib.sha256(canonical_json(item)).hexdigest() == digest


async def _seed(client: Any, writer: dict[str, str]) -> list[dict[str, Any]]:
    events = [
        event_json(1),
        event_json(2, action="update", type="invoice.submit"),
        event_json(3, outcome="denied", type="patient.detokenise", purpose="re-identify for query 7"),
        event_json(4, action="execute", type="patient.tokenise", entity=None),
        event_json(5, source="tokeniser"),
    ]
    await _append(client, writer, events)
    return events


async def test_filters(client: Any, writer: dict[str, str], reader: dict[str, str]) -> None:
    await _seed(client, writer)

    async def seqs(**params: Any) -> list[int]:
        r = await client.get(
            "/v1/events", params={"source": ["cef-api", "tokeniser"], **params}, headers=reader
        )
        assert r.status_code == 200, r.text
        return [e["seq"] for e in r.json()["items"] if e["source"] != "audit"]

    assert await seqs(actor="user-1") == [1, 4]
    assert await seqs(org="RX1") == [1, 3, 5]
    assert await seqs(action="update") == [2]
    assert await seqs(action=["update", "execute"]) == [2, 4]
    assert await seqs(type="patient.*") == [3, 4]
    assert await seqs(type="invoice.read") == [1, 5]
    assert await seqs(entity="inv-3") == [3]
    assert await seqs(entity_type="invoice") == [1, 2, 3, 5]
    assert await seqs(outcome="denied") == [3]
    assert await seqs(source="tokeniser") == [5]
    assert await seqs(actor="nobody") == []
    item = (await client.get("/v1/events", params={"outcome": "denied"}, headers=reader)).json()["items"][0]
    for key in ("seq", "recorded_at", "actor", "action", "outcome", "entity", "purpose", "prev_hash", "hash"):
        assert key in item
    assert item["purpose"] == "re-identify for query 7"
    assert item["actor"]["sub"] == "user-0"
    assert item["entity"] == {
        "type": "invoice",
        "id": "inv-3",
        "count": 3,
    }


async def test_time_range(client: Any, writer: dict[str, str], reader: dict[str, str]) -> None:
    await _seed(client, writer)
    first = (await client.get("/v1/events", headers=reader)).json()["items"][0]["recorded_at"]
    r = await client.get("/v1/events", params={"since": first, "source": "cef-api"}, headers=reader)
    assert len(r.json()["items"]) == 4
    r = await client.get("/v1/events", params={"until": first}, headers=reader)
    assert r.json()["items"] == []
    r = await client.get("/v1/events", params={"since": "2999-01-01T00:00:00Z"}, headers=reader)
    assert r.json()["items"] == []
    r = await client.get("/v1/events", params={"since": "2026-01-01T00:00:00"}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "naive-datetime"


async def test_cursor_pages_in_stable_seq_order(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _append(client, writer, [event_json(i) for i in range(7)])
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "source": "cef-api"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/events", params=params, headers=reader)).json()
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(1, 8))
    page = (
        await client.get(
            "/v1/events", params={"limit": 2, "order": "desc", "source": "cef-api"}, headers=reader
        )
    ).json()
    assert [e["seq"] for e in page["items"]] == [7, 6]
    nxt = (
        await client.get(
            "/v1/events",
            params={"limit": 2, "order": "desc", "source": "cef-api", "cursor": page["next_cursor"]},
            headers=reader,
        )
    ).json()
    assert [e["seq"] for e in nxt["items"]] == [5, 4]
    r = await client.get("/v1/events", params={"cursor": "garbage"}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid-cursor"
    r = await client.get("/v1/events", params={"cursor": page["next_cursor"]}, headers=reader)
    assert r.status_code == 400
    r = await client.get("/v1/events", params={"limit": 0}, headers=reader)
    assert r.status_code == 422


async def test_every_auditor_query_is_itself_an_event(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer)
    await client.get("/v1/events", params={"actor": "user-1", "purpose": "annual audit"}, headers=reader)
    await client.get("/v1/events/export", params={"format": "csv", "outcome": "denied"}, headers=reader)
    await client.get("/v1/verify", headers=reader)
    page = (await client.get("/v1/events", params={"source": "audit"}, headers=reader)).json()
    own = [(e["type"], e["subtype"], e["actor"]["sub"], e["recorded_by"]["sub"]) for e in page["items"]]
    assert own == [
        ("audit.query", "events.list", "auditor-1", "audit"),
        ("audit.query", "events.export.csv", "auditor-1", "audit"),
        ("audit.verify", None, "auditor-1", "audit"),
    ]
    first = page["items"][0]
    assert first["purpose"] == "annual audit"
    assert first["entity"] == {"type": "audit_event", "id": None, "count": 2}
    assert first["detail"]["filters"] == {"actor": "user-1"}
    assert first["actor"]["org"] == "X26"


async def test_jsonl_export_records_verify_on_their_own(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer)
    r = await client.get("/v1/events/export", params={"format": "jsonl", "source": "cef-api"}, headers=reader)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/jsonl")
    assert "attachment" in r.headers["content-disposition"]
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4]
    prev = "0" * 64
    for item in lines:
        digest = item.pop("hash")
        assert item["prev_hash"] == prev
        assert hashlib.sha256(canonical_json(item)).hexdigest() == digest
        prev = digest


async def test_csv_export_escapes_formulas(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    hostile = event_json(
        1, purpose='=HYPERLINK("http://evil")', subtype="+cmd", request_id="@x", detail={"note": "-2+3"}
    )
    hostile["actor"]["sub"] = "-1+1"
    await _append(client, writer, [hostile, event_json(2)])
    r = await client.get("/v1/events/export", params={"format": "csv", "source": "cef-api"}, headers=reader)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 2
    assert rows[0]["purpose"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["subtype"] == "'+cmd"
    assert rows[0]["request_id"] == "'@x"
    assert rows[0]["actor_sub"] == "'-1+1"
    assert rows[0]["detail"] == '{"note":"-2+3"}'
    assert rows[1]["purpose"] == "validation"
    assert rows[0]["seq"] == "1"
    assert len(rows[0]["hash"]) == 64
    for row in rows:
        assert not any(v.startswith(("=", "+", "-", "@")) for v in row.values())


async def test_fhir_export_is_a_bundle_of_audit_events(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer)
    r = await client.get("/v1/events/export", params={"format": "fhir", "outcome": "denied"}, headers=reader)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    [entry] = bundle["entry"]
    event = entry["resource"]
    assert entry["fullUrl"] == f"urn:uuid:{event['id']}"
    uuid.UUID(event["id"])
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "patient.detokenise"
    assert event["action"] == "R"
    assert event["outcome"] == "4"
    assert event["purposeOfEvent"] == [{"text": "re-identify for query 7"}]
    requestor = event["agent"][0]
    assert requestor["requestor"] is True
    assert requestor["who"]["identifier"]["value"] == "user-0"
    assert {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RX1"} in [
        a["who"]["identifier"] for a in event["agent"]
    ]
    assert event["entity"][0]["what"]["identifier"]["value"] == "inv-3"
    assert event["entity"][0]["detail"] == [{"type": "count", "valueString": "3"}]
    chain = {x["url"]: x for x in event["extension"][0]["extension"]}
    assert chain["seq"]["valueInteger"] == 3
    assert len(chain["hash"]["valueString"]) == 64
    empty = (
        await client.get("/v1/events/export", params={"format": "fhir", "actor": "nobody"}, headers=reader)
    ).json()
    assert empty["entry"] == []


async def test_unknown_export_format_is_422(client: Any, reader: dict[str, str]) -> None:
    r = await client.get("/v1/events/export", params={"format": "xml"}, headers=reader)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("format")


async def test_a_filter_holding_an_identifier_is_recorded_only_as_a_digest(
    client: Any, reader: dict[str, str]
) -> None:
    # Ten digits inside a longer word are not a word the log mask would catch, but still an NHS number.
    await client.get("/v1/events", params={"actor": "P9434765919", "entity": "inv-1"}, headers=reader)
    page = (await client.get("/v1/events", params={"source": "audit"}, headers=reader)).json()
    filters = page["items"][0]["detail"]["filters"]
    assert filters["entity"] == "inv-1"
    assert set(filters["actor"]) == {"digest", "length"}
    assert "9434765919" not in orjson.dumps(page).decode()
