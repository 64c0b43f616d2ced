"""GET /v1/entities/{type}/{id}/events: one entity's history, oldest first (audit:read; audited).

An invoice's history holds its parts too: every event whose entity id starts with "{invoice id}/"
(its lines `invoice-line` "{invoice}/{line_ref}", challenges `invoice-challenge`
"{invoice}/challenge/{id}", payments `invoice-payment` "{invoice}/payment/{n}", and the
re-identifications of its lines). Any other type is that exact (type, id)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from cef_audit.access import audit_log, require_reader
from cef_audit.events.repository import EventFilter
from cef_audit.events.router import audited_page
from cef_audit.events.schemas import EventPage
from cef_audit.log.sequencer import AuditLog
from cef_common.auth import Principal
from cef_common.openapi import problems

router = APIRouter(prefix="/v1/entities", tags=["events"])

# The entity types whose history includes their parts (entity ids "{id}/...").
WITH_PARTS = frozenset({"invoice"})


@router.get(
    # `:path`: a line's id holds a slash ("{invoice}/{line_ref}"), as does a challenge's.
    "/{entity_type}/{entity_id:path}/events",
    response_model=EventPage,
    summary="One entity's history, oldest first, a page at a time (an invoice's includes its lines, "
    "challenges and payments)",
    responses=problems(
        400,
        described={
            400: "invalid-cursor or purpose-holds-identifier: `detail` says what to change",
            404: "Only for a path naming no type and id (/v1/entities/invoice/events), never for an "
            "unknown entity: the log cannot tell an entity that never existed from one nothing has "
            "happened to, so both are a 200 with no items",
        },
    ),
)
def entity_history(
    request: Request,
    principal: Annotated[Principal, Depends(require_reader)],
    log: Annotated[AuditLog, Depends(audit_log)],
    entity_type: Annotated[
        str,
        Path(min_length=1, max_length=100, description="the entity's type, e.g. invoice or invoice-line"),
    ],
    entity_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=255,
            description="the entity's id, e.g. an invoice id, or a line's \"{invoice id}/{line_ref}\" (its "
            "slash may be sent as it is or as %2F)",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    purpose: Annotated[
        str | None,
        Query(max_length=1000, description="why the auditor is looking (recorded in the query's own event)"),
    ] = None,
) -> dict[str, Any]:
    # The id is recorded in the query's own event as typed, or as a digest when it is shaped like an
    # identifier (EventFilter.described), as every filter is.
    event_filter = EventFilter(entity=entity_id, entity_type=entity_type, parts=entity_type in WITH_PARTS)
    return audited_page(
        request,
        log,
        principal=principal,
        event_filter=event_filter,
        subtype="entities.history",
        purpose=purpose,
        limit=limit,
        cursor=cursor,
        order="asc",
    )
