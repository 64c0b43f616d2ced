"""Per-request context (request id, W3C trace context) carried across async and thread hops.

The trace context is OpenTelemetry's (cef_common.tracing): the request middleware sets
`traceparent_var` to its server span's traceparent, and `child_traceparent` follows the current
span, so a traceparent made here names the same trace as the spans and the log lines."""

from __future__ import annotations

import re
import secrets
import uuid
from contextvars import ContextVar

from opentelemetry import trace

from cef_common.logging import mask_text

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# What a caller's request id may not carry, wherever it sits in the id (a request id is logged in
# every line and echoed in X-Request-Id): ten or more digits in a row, separators ignored (an NHS
# number); a calendar date, with or without separators, year first or last; a whole segment shaped
# like a full postcode (what the log mask would change). A refused id is replaced, not masked, so an
# accepted id is never altered by the log mask.
_D, _M = r"(?:0[1-9]|[12][0-9]|3[01])", r"(?:0[1-9]|1[0-2])"
_REFUSED_IN_REQUEST_ID = (
    re.compile(r"[0-9](?:[._\-]?[0-9]){9}"),
    re.compile(rf"(?:19|20)[0-9]{{2}}(?:{_M}{_D}|[._\-][0-9]{{1,2}}[._\-][0-9]{{1,2}})"),
    re.compile(rf"(?:{_D}{_M}|[0-9]{{1,2}}[._\-][0-9]{{1,2}}[._\-])(?:19|20)[0-9]{{2}}"),
    re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{1,2}[0-9][A-Za-z0-9]?[._\-][0-9][A-Za-z]{2}(?![0-9A-Za-z])"),
)
# The traceparent accepted from a caller (W3C Trace Context, version 00, lower-case hex).
TRACEPARENT_SHAPE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def request_id_is_safe(value: str) -> bool:
    """True when `value` may be logged and echoed as it is: the allowed characters, nothing shaped
    like an identifier, and nothing the log mask would change."""
    return (
        _SAFE_REQUEST_ID.match(value) is not None
        and not any(shape.search(value) for shape in _REFUSED_IN_REQUEST_ID)
        and mask_text(value) == value
    )


def new_request_id() -> str:
    """A fresh request id that passes `request_id_is_safe` (about one random hex id in ten holds
    ten digits in a row or a date; those are drawn again)."""
    while True:
        rid = uuid.uuid4().hex
        if request_id_is_safe(rid):
            return rid


def accept_request_id(value: str | None) -> str:
    """The caller's request id when it is safe to log and echo, else a new one."""
    if value and request_id_is_safe(value):
        return value
    return new_request_id()


def accept_traceparent(value: str | None) -> str:
    """Continues the caller's trace with a new span id, or starts a trace."""
    m = TRACEPARENT_SHAPE.match(value or "")
    trace_id = m.group(1) if m and m.group(1) != "0" * 32 else secrets.token_hex(16)
    flags = m.group(3) if m else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def current_traceparent() -> str | None:
    """The traceparent of the current span (OpenTelemetry's), else the one set in `traceparent_var`
    by code outside a request, else None."""
    c = trace.get_current_span().get_span_context()
    if c.is_valid:
        return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags) & 0x01:02x}"
    return traceparent_var.get()


def child_traceparent() -> str:
    """A traceparent for a hop that opens no span of its own (outgoing HTTP calls open client
    spans, cef_common.http): same trace, new span id."""
    return accept_traceparent(current_traceparent())
