"""One error hierarchy for every service, rendered as RFC 9457 problem+json."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://cef.nhs.invalid/problems/"

log = structlog.get_logger(__name__)


class AppError(Exception):
    """An error a caller can act on: an HTTP status, a stable code and a detail saying what to change."""

    status: int = 500
    code: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(AppError):
    status, code, title = 400, "bad-request", "Bad request"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": f'Bearer error="{error}"'})


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload-too-large", "Payload too large"


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


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return problem_response(
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            instance=request.url.path,
            extra=exc.extra,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for err in exc.errors():
            # Never echo the rejected input back: it may be an identifier.
            if err.get("type") == "json_invalid":
                # The location of a JSON syntax error is a character offset, not a field.
                loc = err.get("loc", ())
                where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
                reason = str((err.get("ctx") or {}).get("error", "malformed"))
                message = f"the body is not valid JSON ({reason}{where})"
                errors.append({"field": "body", "message": message})
                continue
            errors.append({"field": _field_path(err.get("loc", ())), "message": err.get("msg", "invalid")})
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem_response(
            status=422,
            code="validation-error",
            title="Request is not valid",
            detail=f"{first['field']}: {first['message']}",
            instance=request.url.path,
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
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Log the type only: messages of arbitrary exceptions may carry data.
        log.error("unhandled_error", error_type=type(exc).__name__, path=request.url.path, exc_info=exc)
        return problem_response(
            status=500,
            code="internal-error",
            title="Internal error",
            detail="The service failed unexpectedly; the request id identifies it in the logs.",
            instance=request.url.path,
        )
