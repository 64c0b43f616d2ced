"""Browser security: the session cookie, CSRF tokens, and the headers on every answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from cef_common.errors import Forbidden
from cef_web.config import Settings
from cef_web.sessions import COOKIE, SECURE_COOKIE, SessionStore, WebSession, constant_time_equal

STATIC_PREFIXES = ("/assets/", "/static/")


def content_security_policy(settings: Settings) -> str:
    # No inline script or style anywhere; forms post only here (and, when signing out of the
    # identity provider, there); nothing may frame a page.
    form_targets = ["'self'"]
    if settings.oidc_issuer:
        parts = urlsplit(settings.oidc_issuer)
        form_targets.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            # The NHS.UK frontend's Frutiger font is served by NHS England's asset host.
            "font-src 'self' https://assets.nhs.uk",
            "connect-src 'self'",
            f"form-action {' '.join(form_targets)}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


def cookie_name(settings: Settings) -> str:
    return SECURE_COOKIE if settings.effective_cookie_secure else COOKIE


def set_session_cookie(response: Response, settings: Settings, session: WebSession) -> None:
    response.set_cookie(
        cookie_name(settings),
        session.id,
        httponly=True,
        secure=settings.effective_cookie_secure,
        samesite="lax",
        path="/",
        # No Max-Age: the cookie ends with the browser; the server ends the session sooner.
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        secure=settings.effective_cookie_secure,
        httponly=True,
        samesite="lax",
    )


def install(app: FastAPI, settings: Settings) -> None:
    policy = content_security_policy(settings)

    @app.middleware("http")
    async def sessions_and_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        static = request.url.path.startswith(STATIC_PREFIXES)
        store: SessionStore = request.app.state.sessions
        had = request.cookies.get(cookie_name(settings))
        if not static:
            request.state.web_session = await run_in_threadpool(store.get, had)
        response = await call_next(request)
        if not static:
            # A page may have started, replaced or ended the session: the cookie follows.
            new: WebSession | None = getattr(request.state, "new_session", None)
            if new is not None:
                set_session_cookie(response, settings, new)
            elif getattr(request.state, "session_ended", False) or (
                had and request.state.web_session is None
            ):
                clear_session_cookie(response, settings)
        headers = response.headers
        headers["Content-Security-Policy"] = policy
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        # No page's address (which never holds an identifier anyway) goes to another site.
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
        if settings.effective_cookie_secure:
            headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if static:
            headers["Cache-Control"] = "public, max-age=3600"
        else:
            # Every page may show line data: nothing is kept by the browser or a proxy.
            headers["Cache-Control"] = "no-store"
            headers["Pragma"] = "no-cache"
        return response


def session_for_form(request: Request) -> WebSession:
    """The session a form belongs to, starting one (for the sign-in form) when there is none."""
    session: WebSession | None = getattr(request.state, "web_session", None)
    if session is None:
        store: SessionStore = request.app.state.sessions
        session = store.create()
        request.state.web_session = session
        request.state.new_session = session
    return session


async def csrf_protect(request: Request) -> None:
    """Dependency of every form post: the form's token must be its session's, and a browser that
    says where the form came from must say it came from here."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    settings: Settings = request.app.state.settings
    origin = request.headers.get("origin")
    if origin and origin != "null":
        expected = {settings.public_base_url, f"{request.url.scheme}://{request.url.netloc}"}
        if origin.rstrip("/") not in expected:
            raise Forbidden("the form was sent from another site", code="cross-site-form")
    session: WebSession | None = getattr(request.state, "web_session", None)
    form = await request.form()
    sent = form.get("csrf_token")
    if session is None or not isinstance(sent, str) or not constant_time_equal(sent, session.csrf_token):
        raise Forbidden(
            "this form has expired or did not come from this site: go back, reload the page and "
            "send it again",
            code="csrf-refused",
        )
