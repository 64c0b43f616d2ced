"""GET /v1/reidentifications: re-identifications by person and by patient token, over both databases."""

from __future__ import annotations

from typing import Any

from audit_test_support import event_json

from cef_common.audit import AuditActor, AuditEntity

INVOICE = "0b7c2f0e-3a5d-4d7e-9a51-6f0f5c1d2e3a"


def _reidentify(
    n: int, *, person: str, token: str, outcome: str = "success", **overrides: Any
) -> dict[str, Any]:
    return event_json(
        n,
        action="read",
        type="patient.reidentify",
        outcome=outcome,
        actor=AuditActor(sub=person, org="00C", client="tests", issuer="https://login.example.nhs.uk"),
        source="cef-api",
        entity=AuditEntity(type="invoice-line", id=f"{INVOICE}/L{n}"),
        purpose="resolve-query",
        detail={
            "purpose": "resolve-query",
            "invoice_id": INVOICE,
            "line_ref": f"L{n}",
            "patient_token": token,
        },
        **overrides,
    )


async def _seed(client: Any, writer: dict[str, str]) -> list[dict[str, Any]]:
    events = [
        _reidentify(1, person="staff-a", token="N1.AAAAAAAAAAAAAAAAAAAAAAAA"),
        _reidentify(2, person="staff-b", token="N1.AAAAAAAAAAAAAAAAAAAAAAAA"),
        _reidentify(3, person="staff-a", token="N1.BBBBBBBBBBBBBBBBBBBBBBBB"),
        _reidentify(4, person="staff-a", token="N1.AAAAAAAAAAAAAAAAAAAAAAAA", outcome="denied"),
        # Not re-identifications: another type with the same token, the type from another producer.
        event_json(
            5, actor=AuditActor(sub="staff-a"), detail={"patient_token": "N1.AAAAAAAAAAAAAAAAAAAAAAAA"}
        ),
        {**_reidentify(6, person="staff-a", token="N1.AAAAAAAAAAAAAAAAAAAAAAAA"), "source": "tokeniser"},
    ]
    r = await client.post("/v1/events", json={"events": events}, headers=writer)
    assert r.status_code == 201, r.text
    return events


async def _lines(client: Any, reader: dict[str, str], **params: Any) -> list[str]:
    r = await client.get("/v1/reidentifications", params={"order": "asc", **params}, headers=reader)
    assert r.status_code == 200, r.text
    return [e["detail"]["line_ref"] for e in r.json()["items"]]


async def test_by_person_by_patient_token_and_both(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer)
    assert await _lines(client, reader) == ["L1", "L2", "L3", "L4"]
    assert await _lines(client, reader, person="staff-a") == ["L1", "L3", "L4"]
    assert await _lines(client, reader, patient_token="N1.AAAAAAAAAAAAAAAAAAAAAAAA") == ["L1", "L2", "L4"]
    assert await _lines(client, reader, person="staff-a", patient_token="N1.AAAAAAAAAAAAAAAAAAAAAAAA") == [
        "L1",
        "L4",
    ]
    assert await _lines(client, reader, patient_token="N1.CCCCCCCCCCCCCCCCCCCCCCCC") == []
    assert await _lines(client, reader, outcome="denied") == ["L4"]


async def test_pages_follow_the_cursor_newest_first(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer)
    r = await client.get("/v1/reidentifications", params={"person": "staff-a", "limit": 2}, headers=reader)
    first = r.json()
    assert [e["detail"]["line_ref"] for e in first["items"]] == ["L4", "L3"]
    r = await client.get(
        "/v1/reidentifications",
        params={"person": "staff-a", "limit": 2, "cursor": first["next_cursor"]},
        headers=reader,
    )
    assert [e["detail"]["line_ref"] for e in r.json()["items"]] == ["L1"]
    assert r.json()["next_cursor"] is None


async def test_the_listing_is_itself_audited(
    client: Any, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _seed(client, writer)
    r = await client.get(
        "/v1/reidentifications",
        params={"patient_token": "N1.AAAAAAAAAAAAAAAAAAAAAAAA", "purpose": "complaint 17"},
        headers=reader,
    )
    assert r.status_code == 200
    r = await client.get("/v1/events", params={"type": "audit.query"}, headers=reader)
    [query] = [e for e in r.json()["items"] if e.get("subtype") == "reidentifications.list"]
    assert query["actor"]["sub"] == "auditor-1"
    assert query["purpose"] == "complaint 17"
    assert query["entity"]["count"] == 3
    assert query["detail"]["filters"]["patient_token"] == "N1.AAAAAAAAAAAAAAAAAAAAAAAA"


async def test_401_without_a_token_and_403_without_audit_read(
    client: Any, writer: dict[str, str], dev_issuer: Any
) -> None:
    r = await client.get("/v1/reidentifications")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    staff = dev_issuer.headers("invoices:validate", sub="staff-a", org="00C", aud="audit")
    for headers in (writer, staff):
        r = await client.get("/v1/reidentifications", params={"person": "staff-a"}, headers=headers)
        assert r.status_code == 403


async def test_a_naive_time_is_refused(client: Any, reader: dict[str, str]) -> None:
    r = await client.get("/v1/reidentifications", params={"since": "2026-11-23T09:00:00"}, headers=reader)
    assert r.status_code == 400
    assert r.json()["code"] == "naive-datetime"
