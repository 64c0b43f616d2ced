"""The invoice workflow's audit events: one shape for submission, validation, reads and decisions."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from cef_common.audit import AuditAction, AuditOutcome, build_event, record_event
from cef_common.auth import Principal

SOURCE = "cef-api"


def record_invoice_event(
    session: Session,
    *,
    action: AuditAction,
    type: str,
    principal: Principal | None,
    entity_id: str | None = None,  # None: an event about many invoices (e.g. a purge)
    outcome: AuditOutcome = "success",
    count: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Adds an event about one invoice to the caller's transaction (through the outbox)."""
    record_event(
        session,
        build_event(
            source=SOURCE,
            action=action,
            type=type,
            outcome=outcome,
            principal=principal,
            entity_type="invoice",
            entity_id=entity_id,
            count=count,
            detail=detail,
        ),
    )
