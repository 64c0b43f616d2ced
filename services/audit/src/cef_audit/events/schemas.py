"""Request and response bodies of the events endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cef_common.audit import EVENT_EXAMPLE, AuditEventIn
from cef_common.openapi import model_examples

# A stored record as listings answer it (synthetic values; hashes of nothing in particular).
RECORD_EXAMPLE: dict[str, Any] = {
    **EVENT_EXAMPLE,
    "subtype": None,
    "seq": 1042,
    "recorded_at": "2026-11-23T09:00:01.262144Z",
    "recorded_by": {"sub": "cef-api", "issuer": "cef-api", "client": "cef-api", "org": None},
    "prev_hash": "5e2d1c0b9a8f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d",
    "hash": "a3f9c2e18d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19",
}


class EventBatch(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([{"events": [EVENT_EXAMPLE]}]))

    events: list[AuditEventIn]


class AppendResultOut(BaseModel):
    event_id: str
    seq: int
    duplicate: bool = Field(description="true when this event id was already stored (nothing appended)")


class AppendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "results": [{"event_id": EVENT_EXAMPLE["event_id"], "seq": 1042, "duplicate": False}],
                    "length": 1042,
                }
            ]
        )
    )

    results: list[AppendResultOut]
    length: int = Field(description="the log's length after this request")


class EventPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [{"items": [RECORD_EXAMPLE], "next_cursor": "eyJzZXEiOjEwNDIsIm9yZGVyIjoiYXNjIn0"}]
        )
    )

    items: list[dict[str, Any]] = Field(
        description="records as hashed (seq, recorded_at, actor, action, type, outcome, entity, purpose, "
        "prev_hash, …) plus their hash: SHA-256 of the record's RFC 8785 serialisation without `hash`"
    )
    next_cursor: str | None


SUMMARY_EXAMPLE: dict[str, Any] = {
    "since": "2026-11-01T00:00:00.000000Z",
    "until": "2026-12-01T00:00:00.000000Z",
    "total": 1318,
    "by_type": {"invoice.read": 1204, "patient.reidentify": 97, "access.refused": 17},
    "by_outcome": {"success": 1290, "denied": 25, "failure": 3},
    "by_org": {"00C": 1115, "RTR": 186, "(none)": 17},
    "by_type_outcome": {
        "invoice.read": {"success": 1201, "failure": 3},
        "patient.reidentify": {"success": 89, "denied": 8},
        "access.refused": {"denied": 17},
    },
}


class EventSummary(BaseModel):
    """How many events the log recorded in a period, counted four ways."""

    model_config = ConfigDict(json_schema_extra=model_examples([SUMMARY_EXAMPLE]))

    since: str | None = Field(
        description="the period's start as asked (inclusive, UTC); null: the log's start"
    )
    until: str | None = Field(description="the period's end as asked (exclusive, UTC); null: up to now")
    total: int = Field(description="every event recorded in the period")
    by_type: dict[str, int] = Field(description="events per type, the most frequent first")
    by_outcome: dict[str, int] = Field(
        description="events per outcome (success, denied, failure; each present, 0 when none)"
    )
    by_org: dict[str, int] = Field(
        description='events per actor organisation (ODS code), the most frequent first; "(none)" counts '
        "the events whose actor names no organisation (anonymous callers, the services themselves)"
    )
    by_type_outcome: dict[str, dict[str, int]] = Field(
        description="per type (in the order of by_type), its events per outcome that occurred"
    )
