"""structlog configured once for every service: JSON in production, readable on a terminal,
request ids and trace ids in every line of a request, and a last-line-of-defence mask for anything
shaped like an NHS number, a date of birth or a full postcode."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

# The mask is the last line of defence, not the first: the code never logs a free value a caller
# sent (see cef_common.redact), so the mask only catches what slips through. Each shape matches a
# whole run of letters and digits, never a piece of a longer one, so that request ids, hashes and
# tokens pass unbroken (an identifier hidden inside such a run is not caught: the request id is
# refused instead, see cef_common.context.accept_request_id).
_NOT_AFTER_ALNUM, _NOT_BEFORE_ALNUM = r"(?<![0-9A-Za-z])", r"(?![0-9A-Za-z])"
# Ten digits, or 3-3-4 with spaces or with hyphens (not 6-4: "RTR-201904-0000" is an invoice number).
NHS_NUMBER_SHAPE = re.compile(
    _NOT_AFTER_ALNUM
    + r"(?:[0-9]{10}|[0-9]{3} [0-9]{3} [0-9]{4}|[0-9]{3}-[0-9]{3}-[0-9]{4})"
    + _NOT_BEFORE_ALNUM
)
# A calendar date standing alone (1900-2099; YYYY-MM-DD, DD/MM/YYYY or DD-MM-YYYY): a date of
# birth's shape. A timestamp (a date followed by "T" or a time) is not masked, nor is the
# `timestamp` key every line carries.
_DAY, _MONTH, _YEAR = r"(?:0?[1-9]|[12][0-9]|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)[0-9]{2}"
DATE_SHAPE = re.compile(
    _NOT_AFTER_ALNUM
    + rf"(?:{_YEAR}-{_MONTH}-{_DAY}|{_DAY}/{_MONTH}/{_YEAR}|{_DAY}-{_MONTH}-{_YEAR})"
    + r"(?![0-9A-Za-z]|[ :][0-9]{2}:|-[0-9])"
)
# A full UK postcode in any case, with or without its space (outward code, inward code).
POSTCODE_SHAPE = re.compile(
    _NOT_AFTER_ALNUM + r"[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}" + _NOT_BEFORE_ALNUM
)
IDENTIFIER_SHAPES = (NHS_NUMBER_SHAPE, DATE_SHAPE, POSTCODE_SHAPE)
# Keys whose values are the logging pipeline's own dates, never a caller's.
_UNMASKED_KEYS = frozenset({"timestamp"})
MASK = "[REDACTED]"

_configured = False


def mask_text(text: str) -> str:
    """`text` with every NHS number, standalone date and full postcode shape replaced by MASK."""
    for shape in IDENTIFIER_SHAPES:
        text = shape.sub(MASK, text)
    return text


def mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and 10**9 <= value < 10**10:
        return MASK
    return value


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return list(reversed(chain))


def render_exception(exc: BaseException) -> str:
    """Types and frames of an exception and its causes, never their messages: a message may
    quote the data that failed (pydantic and database errors do), and no mask catches every
    date of birth or postcode."""
    parts = []
    for link in _exception_chain(exc):
        frames = "".join(traceback.format_list(traceback.extract_tb(link.__traceback__)))
        name = f"{type(link).__module__}.{type(link).__qualname__}"
        parts.append(f"Traceback (most recent call last):\n{frames}{name} (message withheld)")
    return "\n\nwhich led to:\n\n".join(parts)


def render_exc_info(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replaces `exc_info` (structlog's or a standard library record's) by `render_exception`."""
    exc_info = event_dict.pop("exc_info", None)
    exc: BaseException | None = None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        exc = exc_info[1]
    elif exc_info is True:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict["exception"] = render_exception(exc)
    return event_dict


def add_trace_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`trace_id`: the current span's trace id (cef_common.tracing), so a request's lines in every
    service it reached can be found by one id. Lines outside any trace (start-up) have none."""
    if "trace_id" not in event_dict:
        c = trace.get_current_span().get_span_context()
        if c.is_valid:
            event_dict["trace_id"] = f"{c.trace_id:032x}"
    return event_dict


def mask_identifiers(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key not in _UNMASKED_KEYS:
            event_dict[key] = mask_value(value)
    return event_dict


def configure_logging(*, level: str = "INFO", fmt: str = "auto", service: str | None = None) -> None:
    """Configures structlog and routes the standard library (uvicorn included) through it."""
    global _configured
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        render_exc_info,
        mask_identifiers,
    ]
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Access lines carry query strings; the request middleware logs a safer line of its own.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _configured = True
