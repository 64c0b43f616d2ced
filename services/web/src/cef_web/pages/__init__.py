"""The pages, one module per role, plus signing in (development and OpenID Connect) and the home page."""

from __future__ import annotations

from fastapi import APIRouter

from cef_web.pages import auditor, board, finance, oidc, provider, signin, staff

ROUTERS: list[APIRouter] = [
    signin.router,
    oidc.router,
    provider.router,
    staff.router,
    finance.router,
    board.router,
    auditor.router,
]
