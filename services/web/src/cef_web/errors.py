"""Every failure as a page in the NHS.UK style: what happened and what to do, never a stack trace."""

from __future__ import annotations

from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from cef_common.context import request_id_var
from cef_common.errors import AppError, count_refusal, route_template
from cef_web.api import ApiProblem, Unavailable
from cef_web.auth import SignInRequired
from cef_web.templating import render

log = structlog.get_logger(__name__)

TITLES = {
    400: "There is a problem with the request",
    401: "You need to sign in",
    403: "You cannot use this page",
    404: "Page not found",
    405: "Page not found",
    409: "This cannot be done now",
    413: "The file is too large",
    422: "There is a problem",
    503: "Sorry, the service is unavailable",
}


def error_page(request: Request, status: int, detail: str, *, title: str | None = None) -> Response:
    return render(
        request,
        "error.html",
        status_code=status,
        title=title or TITLES.get(status, "Sorry, there is a problem with the service"),
        detail=detail,
        status=status,
        request_id=request_id_var.get(),
    )


def safe_next(path: str | None) -> str:
    """A page to return to after signing in: only a path on this site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 500:
        return "/"
    return path


def install(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        # Where to come back to is the page's path alone: no query, whatever it held.
        return RedirectResponse(f"/sign-in?next={quote(safe_next(request.url.path))}", status_code=303)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        hook = getattr(request.app.state, "on_refusal", None)
        count_refusal(request, exc)
        if hook is not None and exc.is_refusal and not exc.audited:
            await hook(request, exc)
        return error_page(request, exc.status, exc.detail)

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> Response:
        if isinstance(exc, Unavailable):
            return error_page(request, 503, exc.detail)
        if exc.status in (401, 403, 404, 409, 413, 422):
            return error_page(request, exc.status, exc.detail)
        log.warning("service_failed", status=exc.status, code=exc.code, path=route_template(request.scope))
        return error_page(request, 502, "a service behind this page failed; try again in a moment")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        # Never echo what was sent: it may be an identifier.
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) or "form" for e in exc.errors()})
        return error_page(
            request, 400, f"these parts of the address or form are not valid: {', '.join(fields)}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return error_page(request, 404, "If you typed the web address, check it is correct.")
        return error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled_error", error_type=type(exc).__name__, path=route_template(request.scope), exc_info=exc
        )
        return error_page(
            request,
            500,
            "Something went wrong on our side. Try again later; if it keeps happening, give the "
            "reference below to the service desk.",
        )
