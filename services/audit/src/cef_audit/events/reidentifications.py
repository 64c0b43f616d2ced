"""GET /v1/reidentifications: who re-identified which patient, when and why (audit:read; audited).

A re-identification is the CEF API's `patient.reidentify` event: its actor is the person, its entity
the invoice line, its purpose one of the fixed list, and `detail.patient_token` the patient. Refused
attempts are the same type with outcome `denied`; the tokeniser's own `patient.detokenise` events
of each one can be found by the line (`detail.invoice_id`, `detail.line_ref`) in /v1/events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from cef_audit.access import audit_log, require_reader
from cef_audit.events.repository import EventFilter, Order
from cef_audit.events.router import audited_page
from cef_audit.events.schemas import EventPage
from cef_audit.log.sequencer import AuditLog
from cef_common.audit import AuditOutcome
from cef_common.auth import Principal
from cef_common.openapi import problems

router = APIRouter(prefix="/v1/reidentifications", tags=["events"])

EVENT_TYPE = "patient.reidentify"
PRODUCER = "cef-api"


@router.get(
    "",
    response_model=EventPage,
    summary="Re-identifications of patients (the CEF API's patient.reidentify events), by person and by "
    "patient token, a page at a time",
    responses=problems(400, described={400: "naive-datetime or bad-cursor: `detail` says what to change"}),
)
def list_reidentifications(
    request: Request,
    principal: Annotated[Principal, Depends(require_reader)],
    log: Annotated[AuditLog, Depends(audit_log)],
    person: Annotated[
        str | None, Query(max_length=255, description="the person's subject (sub): the event's actor")
    ] = None,
    patient_token: Annotated[
        str | None, Query(max_length=64, description="the patient's NHS-number token (patient_token)")
    ] = None,
    outcome: Annotated[
        list[AuditOutcome] | None, Query(description="success, denied or failure (default: all)")
    ] = None,
    since: Annotated[datetime | None, Query(description="recorded at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="recorded before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    order: Annotated[Order, Query(description="asc: oldest first; desc: newest first")] = "desc",
    purpose: Annotated[
        str | None,
        Query(max_length=1000, description="why the auditor is looking (recorded in the query's own event)"),
    ] = None,
) -> dict[str, Any]:
    event_filter = EventFilter(
        actor=person,
        type=(EVENT_TYPE,),
        source=(PRODUCER,),
        outcome=tuple(outcome or ()),
        since=since,
        until=until,
        patient_token=patient_token,
    )
    return audited_page(
        request,
        log,
        principal=principal,
        event_filter=event_filter,
        subtype="reidentifications.list",
        purpose=purpose,
        limit=limit,
        cursor=cursor,
        order=order,
    )
