"""Exports of audit events: JSON Lines (the records exactly as hashed, plus `hash`), CSV safe to
open in a spreadsheet, and FHIR R4 AuditEvent resources in a Bundle (after IHE BALP)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import orjson

from cef_audit.log.records import now_stamp
from cef_common.csvout import csv_cell

ExportFormat = Literal["jsonl", "csv", "fhir"]

MEDIA_TYPES: dict[str, str] = {
    "jsonl": "application/jsonl",
    "csv": "text/csv; charset=utf-8",
    "fhir": "application/fhir+json",
}
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "fhir": "json"}

CSV_COLUMNS = (
    "seq",
    "recorded_at",
    "occurred_at",
    "event_id",
    "action",
    "type",
    "subtype",
    "outcome",
    "actor_sub",
    "actor_org",
    "actor_client",
    "actor_issuer",
    "recorded_by",
    "source",
    "entity_type",
    "entity_id",
    "entity_count",
    "purpose",
    "request_id",
    "detail",
    "prev_hash",
    "hash",
)


def jsonl(items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for item in items:
        yield orjson.dumps(item) + b"\n"


def csv_row(item: dict[str, Any]) -> list[str]:
    actor = item.get("actor") or {}
    entity = item.get("entity") or {}
    recorder = item.get("recorded_by") or {}
    values = (
        item["seq"],
        item["recorded_at"],
        item.get("occurred_at"),
        item["event_id"],
        item["action"],
        item["type"],
        item.get("subtype"),
        item["outcome"],
        actor.get("sub"),
        actor.get("org"),
        actor.get("client"),
        actor.get("issuer"),
        recorder.get("sub"),
        item["source"],
        entity.get("type"),
        entity.get("id"),
        entity.get("count"),
        item.get("purpose"),
        item.get("request_id"),
        item.get("detail") or None,
        item["prev_hash"],
        item["hash"],
    )
    return [csv_cell(v) for v in values]


def csv_rows(items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for n, item in enumerate(items, 1):
        writer.writerow(csv_row(item))
        if n % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


# --- FHIR R4 AuditEvent ------------------------------------------------------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"
CEF_SYSTEM = "https://cef.nhs.invalid/fhir"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
CHAIN_EXTENSION = f"{CEF_SYSTEM}/StructureDefinition/audit-chain"
_ACTION_CODES = {"create": "C", "read": "R", "update": "U", "delete": "D", "execute": "E"}
# FHIR audit-event-outcome: 0 success, 4 minor failure (here: refused), 8 serious failure.
_OUTCOME_CODES = {"success": "0", "denied": "4", "failure": "8"}


def fhir_audit_event(item: dict[str, Any]) -> dict[str, Any]:
    actor = item.get("actor") or {}
    user: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                    "code": "humanuser",
                    "display": "human user",
                }
            ]
        },
        "who": {
            "identifier": {"system": actor.get("issuer") or f"{CEF_SYSTEM}/subject", "value": actor["sub"]}
        },
        "requestor": True,
    }
    if item.get("purpose"):
        user["purposeOfUse"] = [{"text": item["purpose"]}]
    agents = [user]
    if actor.get("org"):
        agents.append(
            {
                "type": {"text": "organisation of the requestor"},
                "who": {"identifier": {"system": ODS_SYSTEM, "value": actor["org"]}},
                "requestor": False,
            }
        )
    if actor.get("client"):
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {"identifier": {"system": f"{CEF_SYSTEM}/client", "value": actor["client"]}},
                "requestor": False,
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": item["event_id"],
        "extension": [
            {
                "url": CHAIN_EXTENSION,
                "extension": [
                    {"url": "seq", "valueInteger": item["seq"]},
                    {"url": "prev_hash", "valueString": item["prev_hash"]},
                    {"url": "hash", "valueString": item["hash"]},
                ],
            }
        ],
        "type": {"system": f"{CEF_SYSTEM}/audit-event-type", "code": item["type"]},
        "action": _ACTION_CODES[item["action"]],
        "recorded": item["recorded_at"],
        "outcome": _OUTCOME_CODES[item["outcome"]],
        "agent": agents,
        "source": {
            "site": "CEF",
            "observer": {"display": item["source"]},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if item.get("subtype"):
        event["subtype"] = [{"system": f"{CEF_SYSTEM}/audit-event-subtype", "code": item["subtype"]}]
    if item.get("occurred_at"):
        event["period"] = {"start": item["occurred_at"], "end": item["occurred_at"]}
    if item["outcome"] != "success":
        event["outcomeDesc"] = item["outcome"]
    if item.get("purpose"):
        event["purposeOfEvent"] = [{"text": item["purpose"]}]
    entity = item.get("entity")
    entities: list[dict[str, Any]] = []
    if entity:
        what: dict[str, Any] = {
            "identifier": {
                "system": f"{CEF_SYSTEM}/{entity['type']}",
                "value": entity.get("id") or entity["type"],
            }
        }
        described: dict[str, Any] = {
            "what": what,
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
                "display": "System Object",
            },
            "name": entity["type"],
        }
        if entity.get("count") is not None:
            described["detail"] = [{"type": "count", "valueString": str(entity["count"])}]
        entities.append(described)
    if item.get("request_id"):
        entities.append(
            {
                "what": {"identifier": {"system": f"{CEF_SYSTEM}/request-id", "value": item["request_id"]}},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "4",
                    "display": "Other",
                },
            }
        )
    if entities:
        event["entity"] = entities
    return event


def fhir_bundle(items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """A FHIR R4 Bundle (type collection) of AuditEvents, streamed."""
    yield (
        b'{"resourceType":"Bundle","type":"collection","timestamp":'
        + orjson.dumps(now_stamp())
        + b',"entry":['
    )
    first = True
    for item in items:
        entry = {"fullUrl": f"urn:uuid:{item['event_id']}", "resource": fhir_audit_event(item)}
        yield (b"" if first else b",") + orjson.dumps(entry)
        first = False
    yield b"]}"


def render(fmt: ExportFormat, items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    if fmt == "jsonl":
        return jsonl(items)
    if fmt == "csv":
        return csv_rows(items)
    return fhir_bundle(items)
