"""Per-request context (request id, W3C trace context) carried across async and thread hops."""

from __future__ import annotations

import re
import secrets
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def accept_request_id(value: str | None) -> str:
    """The caller's request id when it is safe to log and echo, else a new one."""
    if value and _SAFE_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def accept_traceparent(value: str | None) -> str:
    """Continues the caller's trace with a new span id, or starts a trace."""
    m = _TRACEPARENT.match(value or "")
    trace_id = m.group(1) if m and m.group(1) != "0" * 32 else secrets.token_hex(16)
    flags = m.group(3) if m else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def child_traceparent() -> str:
    """A traceparent for an outgoing call: same trace, new span."""
    return accept_traceparent(traceparent_var.get())
