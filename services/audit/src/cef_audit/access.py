"""Who may call the audit service, and the service's own audit events about its callers.

Every auditor request, allowed or refused, becomes an event in this log, appended directly (the
audit service has no outbox: its own log is the destination). Refusals take the path every
service shares (cef_common.refusals), with this log as their sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request

from cef_audit.log.records import Recorder
from cef_audit.log.sequencer import AppendResult, AuditLog
from cef_common.audit import AuditAction, AuditEntity, AuditEventIn, AuditOutcome, actor_of
from cef_common.auth import Principal, require_scopes
from cef_common.context import request_id_var
from cef_common.errors import BadRequest
from cef_common.redact import carries_identifier
from cef_common.refusals import RefusalSink

SOURCE = "audit"
SELF = Recorder(sub="audit", issuer="audit", client="audit")


def audit_log(request: Request) -> AuditLog:
    log: AuditLog = request.app.state.audit_log
    return log


def record_own(
    log: AuditLog,
    *,
    principal: Principal,
    action: AuditAction,
    type: str,
    subtype: str | None = None,
    outcome: AuditOutcome = "success",
    count: int | None = None,
    purpose: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AppendResult:
    """Appends an event about a request to this service to its own log, at once. A purpose holding
    something shaped like an identifier is refused (400) rather than written into the log."""
    if purpose is not None and carries_identifier(purpose):
        raise BadRequest(
            "purpose must not hold an NHS number, a date or a postcode: it is recorded as text in this "
            "query's own event; say why you are looking without identifying anyone",
            code="purpose-holds-identifier",
        )
    event = AuditEventIn(
        action=action,
        type=type,
        subtype=subtype,
        outcome=outcome,
        actor=actor_of(principal),
        source=SOURCE,
        entity=AuditEntity(type="audit_event", count=count),
        purpose=purpose,
        request_id=request_id_var.get(),
        detail=detail or {},
    )
    return log.append([event], recorded_by=SELF)[0]


# A refusal of these scopes is appended to this log by the shared refusal auditor (main.py's sink).
require_reader = require_scopes("audit:read")
require_writer = require_scopes("audit:write")


def refusal_sink(app: FastAPI) -> RefusalSink:
    """Refusals of calls to the audit service go straight into its own log, at once."""
    log: AuditLog = app.state.audit_log

    def append(events: Sequence[AuditEventIn]) -> None:
        log.append(events, recorded_by=SELF)

    return append
