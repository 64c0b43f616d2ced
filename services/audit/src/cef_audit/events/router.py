"""Events: append (audit:write), list and export (audit:read); each listing is itself audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, get_args

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from cef_audit.access import audit_log, record_own, require_reader, require_writer
from cef_audit.events.export import EXTENSIONS, MEDIA_TYPES, ExportFormat, render
from cef_audit.events.repository import (
    EventFilter,
    Order,
    decode_cursor,
    encode_cursor,
    iterate_events,
    list_events,
)
from cef_audit.events.schemas import RECORD_EXAMPLE, AppendResponse, AppendResultOut, EventBatch, EventPage
from cef_audit.log.records import Recorder, now_stamp
from cef_audit.log.sequencer import AuditLog
from cef_common.audit import AuditAction, AuditEventIn, AuditOutcome, holds_nul, identifier_in_event
from cef_common.auth import Principal
from cef_common.errors import BadRequest, PayloadTooLarge, Unprocessable, validation_errors
from cef_common.openapi import json_body, problems

router = APIRouter(prefix="/v1/events", tags=["events"])

_EVENTS = TypeAdapter(list[AuditEventIn])


# The body is read by hand (one event or a batch): its schema is given to the document here.
_APPEND_BODY = json_body(AuditEventIn | EventBatch)


_BAD_FILTER = problems(
    400,
    described={
        400: "naive-datetime: since and until need a time zone, e.g. 2026-11-23T09:00:00Z; also "
        "bad-datetime, purpose-holds-identifier or bad-cursor, `detail` says what to change"
    },
)


def _export_content() -> dict[str, Any]:
    """Each export format's media type, with the example record as that format renders it."""
    content: dict[str, Any] = {}
    for format in get_args(ExportFormat):
        media_type = MEDIA_TYPES[format]
        text = b"".join(render(format, iter([RECORD_EXAMPLE]))).decode()
        fhir = format == "fhir"
        content[media_type] = {
            "schema": {"type": "object"} if fhir else {"type": "string"},
            "example": orjson.loads(text) if fhir else text,
        }
    return content


def _field(loc: tuple[Any, ...], batch: bool) -> str:
    parts = [str(p) for p in loc]
    return ".".join(["events", *parts] if batch else parts[1:]) or "body"


def parse_events(body: bytes, *, max_events: int) -> list[AuditEventIn]:
    """One event or {"events": [...]}, validated; errors name the field (events.3.action)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest(
            'the body is not JSON: send one event object or {"events": [...]}', code="invalid-json"
        ) from None
    batch = isinstance(data, dict) and "events" in data
    items = data["events"] if batch else [data]
    if not isinstance(items, list):
        raise Unprocessable("events must be a list of event objects", code="validation-error")
    if not items:
        raise Unprocessable("events is empty: send at least one event", code="validation-error")
    if len(items) > max_events:
        raise PayloadTooLarge(f"the batch holds {len(items)} events; send at most {max_events} per request")
    try:
        events = _EVENTS.validate_python(items)
    except ValidationError as exc:
        # Named and worded without the rejected input (cef_common.errors.validation_errors).
        errors = [
            {"field": _field(tuple(e["field"].split(".")), batch), "message": e["message"]}
            for e in validation_errors(exc.errors())
        ]
        first = errors[0]
        raise Unprocessable(
            f"{first['field']}: {first['message']}", code="validation-error", extra={"errors": errors}
        ) from None
    for index, event in enumerate(events):
        dumped = event.model_dump(mode="json", exclude={"event_id", "occurred_at"})
        where = identifier_in_event(dumped, refused=holds_nul)
        if where is not None:
            field = ".".join(["events", str(index), where] if batch else [where])
            raise Unprocessable(
                f"{field} holds a NUL character (U+0000), which the log cannot store: remove it",
                code="nul-character",
                extra={"errors": [{"field": field, "message": "must not hold a NUL character"}]},
            )
        where = identifier_in_event(dumped)
        if where is not None:
            field = ".".join(["events", str(index), where] if batch else [where])
            raise Unprocessable(
                f"{field} holds something shaped like an NHS number, a date of birth or a postcode; "
                "an audit event names people by their tokens and subjects, never by an identifier",
                code="identifier-in-event",
                extra={"errors": [{"field": field, "message": "must not hold an identifier"}]},
            )
    return events


@router.post(
    "",
    response_model=AppendResponse,
    status_code=201,
    summary="Append one event or a batch (idempotent by event_id)",
    openapi_extra=_APPEND_BODY,
    responses={
        200: {"description": "every event was already stored", "model": AppendResponse},
        **problems(
            400,
            409,
            described={
                400: "invalid-json: the body is not JSON",
                409: "event-id-conflict: an event_id already stored with other content; nothing of the "
                "batch was stored",
            },
        ),
    },
)
async def append_events(
    request: Request,
    principal: Annotated[Principal, Depends(require_writer)],
    log: Annotated[AuditLog, Depends(audit_log)],
) -> Response:
    events = parse_events(await request.body(), max_events=request.app.state.settings.max_batch_events)
    recorder = Recorder(
        sub=principal.sub, issuer=principal.issuer, client=principal.client, org=principal.org
    )
    results = await run_in_threadpool(log.append, events, recorded_by=recorder)
    body = AppendResponse(
        results=[AppendResultOut(event_id=r.event_id, seq=r.seq, duplicate=r.duplicate) for r in results],
        length=max(r.seq for r in results),
    )
    created = any(not r.duplicate for r in results)
    return Response(
        body.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


class FilterParams:
    """The query parameters every listing and export shares."""

    def __init__(
        self,
        actor: Annotated[str | None, Query(description="the actor's subject (sub)")] = None,
        org: Annotated[str | None, Query(description="the actor's organisation (ODS code)")] = None,
        action: Annotated[list[AuditAction] | None, Query(description="any of these actions")] = None,
        type: Annotated[
            list[str] | None,
            Query(description="any of these types; a trailing * matches a prefix (patient.*)"),
        ] = None,
        entity: Annotated[str | None, Query(description="the entity's id, e.g. an invoice id")] = None,
        entity_type: Annotated[str | None, Query(description="the entity's type, e.g. invoice")] = None,
        outcome: Annotated[list[AuditOutcome] | None, Query(description="any of these outcomes")] = None,
        source: Annotated[list[str] | None, Query(description="any of these producing services")] = None,
        since: Annotated[datetime | None, Query(description="recorded at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="recorded before (ISO 8601)")] = None,
        purpose: Annotated[
            str | None,
            Query(
                max_length=1000, description="why the auditor is looking (recorded in the query's own event)"
            ),
        ] = None,
    ) -> None:
        self.filter = EventFilter(
            actor=actor,
            org=org,
            action=tuple(action or ()),
            type=tuple(type or ()),
            entity=entity,
            entity_type=entity_type,
            outcome=tuple(outcome or ()),
            source=tuple(source or ()),
            since=since,
            until=until,
        )
        self.purpose = purpose


FilterDep = Annotated[FilterParams, Depends()]


@router.get(
    "",
    response_model=EventPage,
    summary="List events in seq order, filtered, a page at a time",
    responses=_BAD_FILTER,
)
def get_events(
    request: Request,
    params: FilterDep,
    principal: Annotated[Principal, Depends(require_reader)],
    log: Annotated[AuditLog, Depends(audit_log)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    order: Annotated[Order, Query(description="asc: oldest first; desc: newest first")] = "asc",
) -> dict[str, Any]:
    return audited_page(
        request,
        log,
        principal=principal,
        event_filter=params.filter,
        subtype="events.list",
        purpose=params.purpose,
        limit=limit,
        cursor=cursor,
        order=order,
    )


def audited_page(
    request: Request,
    log: AuditLog,
    *,
    principal: Principal,
    event_filter: EventFilter,
    subtype: str,
    purpose: str | None,
    limit: int,
    cursor: str | None,
    order: Order,
) -> dict[str, Any]:
    """A page of events matching `event_filter`, the auditor's query recorded as an event of its own."""
    after = decode_cursor(cursor, order) if cursor else None
    items, next_after = list_events(
        request.app.state.engine, event_filter, limit=limit, after=after, order=order
    )
    record_own(
        log,
        principal=principal,
        action="read",
        type="audit.query",
        subtype=subtype,
        count=len(items),
        purpose=purpose,
        detail={
            "filters": event_filter.described(),
            "limit": limit,
            "order": order,
            "continued": cursor is not None,
        },
    )
    return {
        "items": items,
        "next_cursor": encode_cursor(next_after, order) if next_after is not None else None,
    }


@router.get(
    "/export",
    summary="Export every matching event as JSON Lines, CSV or a FHIR R4 Bundle of AuditEvents",
    responses={200: {"content": _export_content()}, **_BAD_FILTER},
    response_class=StreamingResponse,
)
def export_events(
    request: Request,
    params: FilterDep,
    principal: Annotated[Principal, Depends(require_reader)],
    log: Annotated[AuditLog, Depends(audit_log)],
    format: Annotated[ExportFormat, Query(description="jsonl, csv or fhir")] = "jsonl",
) -> StreamingResponse:
    settings = request.app.state.settings
    # Recorded before the first byte leaves: an export that is read is always on record.
    record_own(
        log,
        principal=principal,
        action="read",
        type="audit.query",
        subtype=f"events.export.{format}",
        purpose=params.purpose,
        detail={"filters": params.filter.described(), "format": format},
    )
    items = iterate_events(request.app.state.engine, params.filter, max_events=settings.max_export_events)
    filename = f"audit-events-{now_stamp()[:19].replace(':', '')}.{EXTENSIONS[format]}"
    return StreamingResponse(
        render(format, items),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
