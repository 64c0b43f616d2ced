"""Request parameters that their type alone does not bound: opaque paging cursors and the integers
a database or an audit event can hold.

A number a caller sends is checked here before it reaches a query or an audit event: PostgreSQL's
INTEGER stops at 2**31 - 1 and its BIGINT at 2**63 - 1 (beyond the column's type a query fails, as
SQLite's does beyond 2**63 - 1), and an audit event holds integers only within JSON's exact range,
±(2**53 - 1). A value outside either is the caller's
mistake and is answered as one (400 or 422, naming the parameter), never as a server error.

So is a NUL character (U+0000) in a URL: PostgreSQL's text cannot hold one, and none of our names,
codes or ids has one, so every service refuses it before any handler runs, as the invalid value
of a parameter (422, which every operation with parameters documents)."""

from __future__ import annotations

from fastapi import Request

from cef_common.errors import BadRequest, Unprocessable, validation_errors
from cef_common.redact import is_ascii_digits

# The largest integer an INTEGER column holds (PostgreSQL's int4), and a BIGINT (and SQLite's INTEGER).
MAX_INTEGER = 2**31 - 1
MAX_BIGINT = 2**63 - 1
# The largest integer JSON carries exactly (RFC 8785; what an audit event's detail may hold).
MAX_JSON_INTEGER = 2**53 - 1


def decimal_cursor(raw: str | None, *, name: str = "cursor", maximum: int = MAX_BIGINT) -> int | None:
    """The position a decimal paging cursor (a `next_cursor` this service issued) stands for; None
    when absent. Anything else, digits of another script ('¹') or a number beyond `maximum` (the
    largest value of the column it is compared with), is a 400 naming the parameter."""
    if raw is None or raw == "":
        return None
    if not is_ascii_digits(raw, max_digits=len(str(maximum))) or int(raw) > maximum:
        raise BadRequest(
            f"{name} is not valid: pass the next_cursor of the previous page unchanged",
            code="bad-cursor",
            extra={"errors": [{"field": name, "message": "not a cursor this service issued"}]},
        )
    return int(raw)


def refuse_nul_characters(request: Request) -> None:
    """An app-wide dependency: a path or query parameter holding U+0000 is a 422 naming it (a
    parameter name the caller made up is named only when it is a plain name, as validation errors
    name fields)."""
    found = [("path", name) for name, value in request.path_params.items() if "\x00" in str(value)]
    found += [("query", key) for key, value in request.query_params.multi_items() if "\x00" in key + value]
    if found:
        errors = validation_errors(
            [{"loc": loc, "msg": "must not hold a NUL character (U+0000)", "type": "nul"} for loc in found]
        )
        raise Unprocessable(
            f"{errors[0]['field']} holds a NUL character (U+0000): remove it",
            code="nul-character",
            extra={"errors": errors},
        )
