"""The web app's own audit events (signing in and out), in its transactional outbox."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from cef_common.audit import AuditAction, AuditOutcome, build_event, record_event
from cef_common.auth import Principal


async def record(
    request: Request,
    *,
    type: str,
    action: AuditAction,
    outcome: AuditOutcome,
    principal: Principal | None,
    detail: dict[str, Any] | None = None,
) -> None:
    event = build_event(
        source="web", action=action, type=type, outcome=outcome, principal=principal, detail=detail
    )

    def write() -> None:
        with Session(request.app.state.engine) as session:
            record_event(session, event)
            session.commit()

    await run_in_threadpool(write)
    relay = getattr(request.app.state, "outbox_relay", None)
    if relay is not None:
        relay.wake()
