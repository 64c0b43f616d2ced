"""Request and response bodies of the events endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cef_common.audit import AuditEventIn


class EventBatch(BaseModel):
    events: list[AuditEventIn]


class AppendResultOut(BaseModel):
    event_id: str
    seq: int
    duplicate: bool = Field(description="true when this event id was already stored (nothing appended)")


class AppendResponse(BaseModel):
    results: list[AppendResultOut]
    length: int = Field(description="the log's length after this request")


class EventPage(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="records as hashed (seq, recorded_at, actor, action, type, outcome, entity, purpose, "
        "prev_hash, …) plus their hash: SHA-256 of the record's RFC 8785 serialisation without `hash`"
    )
    next_cursor: str | None
