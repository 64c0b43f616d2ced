"""Who may call the audit service, and the service's own audit events about its callers.

Every auditor request, allowed or refused, becomes an event in this log, appended directly (the
audit service has no outbox: its own log is the destination)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from cef_audit.log.records import Recorder
from cef_audit.log.sequencer import AppendResult, AuditLog
from cef_common.audit import AuditAction, AuditEntity, AuditEventIn, AuditOutcome, actor_of
from cef_common.auth import Principal, PrincipalDep
from cef_common.context import request_id_var
from cef_common.errors import Forbidden

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
    """Appends an event about a request to this service to its own log, at once."""
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


def scope_guard(scope: str, *, what: str) -> Callable[..., Principal]:
    """Like `require_scopes`, but a refusal is itself recorded as a denied audit event."""

    def _guard(request: Request, principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            record_own(
                audit_log(request),
                principal=principal,
                action="read" if scope == "audit:read" else "create",
                type="audit.access",
                subtype=what,
                outcome="denied",
                detail={"missing_scope": scope},
            )
            raise Forbidden(f"this request needs the scope {scope}", code="insufficient-scope")
        return principal

    return _guard


require_reader = scope_guard("audit:read", what="read")
require_writer = scope_guard("audit:write", what="write")
