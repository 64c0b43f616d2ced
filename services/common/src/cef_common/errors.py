"""One error hierarchy for every service, rendered as RFC 9457 problem+json."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cef_common.logging import mask_text

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://cef.nhs.invalid/problems/"

log = structlog.get_logger(__name__)

# What a service installs as `app.state.on_refusal` to audit a refusal (cef_common.refusals).
RefusalHook = Callable[[Request, "AppError"], Awaitable[None]]


class AppError(Exception):
    """An error a caller can act on: an HTTP status, a stable code and a detail saying what to change."""

    status: int = 500
    code: str = "internal-error"
    title: str = "Internal error"
    # A refusal (see cef_common.refusals) is audited as denied; None: every 401 and 403 is one.
    refusal: bool | None = None
    # Set by code that has recorded its own audit event of this refusal, so it is not recorded twice.
    audited: bool = False

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        refusal: bool | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if refusal is not None:
            self.refusal = refusal
        self.extra = extra or {}
        self.headers = headers or {}

    @property
    def is_refusal(self) -> bool:
        return self.status in (401, 403) if self.refusal is None else self.refusal

    @property
    def reason(self) -> str:
        """What an audit event of this refusal says about why: a stable slug, never caller input."""
        return self.code


class BadRequest(AppError):
    status, code, title = 400, "bad-request", "Bad request"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(
        self,
        detail: str,
        *,
        error: str = "invalid_token",
        reason: str = "invalid-token",
        verified_claims: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": f'Bearer error="{error}"'})
        self._reason = reason
        # The claims of a token whose signature verified though the token was refused (expired,
        # for another audience...): its caller may be named in the refusal's audit event.
        self.verified_claims = verified_claims

    @property
    def reason(self) -> str:
        return self._reason


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not-found", "Not found"


class NotVisible(NotFound):
    """A resource that exists but that the caller may not see: answered exactly like one that does
    not exist (same status, code and detail), yet audited as a refusal."""

    refusal = True

    @property
    def reason(self) -> str:
        return "not-visible"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload-too-large", "Payload too large"


class RequestTimeout(AppError):
    status, code, title = 408, "request-timeout", "Request timeout"


class Unprocessable(AppError):
    status, code, title = 422, "unprocessable", "Unprocessable content"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service-unavailable", "Service unavailable"


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "code": code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The template of the route a request matched (e.g. `/v1/invoices/{invoice_id}`), None before
    routing or when nothing matched. What logs and problem `instance`s name instead of the raw
    path, whose segments are values a caller typed."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


# A name of one of our fields; anything else in a location (a key of the caller's JSON) is not echoed.
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def _loc_part(part: Any) -> str:
    if isinstance(part, int):
        return str(part)
    text = str(part)
    return text if _FIELD_NAME.match(text) and mask_text(text) == text else "(a key)"


def validation_errors(raw: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """pydantic's errors as `{"field", "message"}`, never echoing the rejected input: no `input`, no
    `ctx`, no key the caller chose (an unexpected field is named by where it sits, not by its name).
    Messages are pydantic's own (they name the expected shape, not the value) or our validators'."""
    errors = []
    for err in raw:
        loc = [p for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        if err.get("type") == "json_invalid":
            # The location of a JSON syntax error is a character offset, not a field.
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            reason = str((err.get("ctx") or {}).get("error", "malformed"))
            errors.append({"field": "body", "message": f"the body is not valid JSON ({reason}{where})"})
            continue
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            loc = loc[:-1]
            message = "holds a field that is not accepted here; send only the documented fields"
        errors.append({"field": ".".join(_loc_part(p) for p in loc) or "body", "message": message})
    return errors


def count_refusal(request: Request, exc: AppError) -> None:
    """Every refusal in the metrics, whoever recorded its audit event (cef_common.refusals)."""
    refusals = getattr(request.app.state, "refusals", None)
    if exc.is_refusal and refusals is not None:
        refusals.count(exc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        # Every refusal is on record before the caller learns of it (cef_common.refusals).
        on_refusal: RefusalHook | None = getattr(request.app.state, "on_refusal", None)
        count_refusal(request, exc)
        if on_refusal is not None and exc.is_refusal and not exc.audited:
            await on_refusal(request, exc)
        return problem_response(
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            instance=route_template(request.scope),
            extra=exc.extra,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        # Never echo the rejected input back: it may be an identifier.
        errors = validation_errors(exc.errors())
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem_response(
            status=422,
            code="validation-error",
            title="Request is not valid",
            detail=f"{first['field']}: {first['message']}",
            instance=route_template(request.scope),
            extra={"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, f"http-{exc.status_code}")
        return problem_response(
            status=exc.status_code,
            code=code,
            title=str(exc.detail),
            detail=str(exc.detail),
            instance=route_template(request.scope),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> Response:
        # The database away (restarting, failing over, unreachable) is not the service failing:
        # the caller is told to retry. Any other database error is unexpected.
        if not (isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated):
            raise exc  # on to the handler of unexpected errors, as any other failure
        log.warning(
            "database_unavailable", error_type=type(exc.orig).__name__, path=route_template(request.scope)
        )
        return problem_response(
            status=503,
            code="database-unavailable",
            title="Service unavailable",
            detail="the service's database could not be reached (it may be restarting); try again shortly",
            instance=route_template(request.scope),
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Log the type only: messages of arbitrary exceptions may carry data.
        log.error(
            "unhandled_error", error_type=type(exc).__name__, path=route_template(request.scope), exc_info=exc
        )
        return problem_response(
            status=500,
            code="internal-error",
            title="Internal error",
            detail="The service failed unexpectedly; the request id identifies it in the logs.",
            instance=route_template(request.scope),
        )
