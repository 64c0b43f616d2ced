"""The pages, one module per role, plus signing in and the home page."""

from __future__ import annotations

from fastapi import APIRouter

from cef_web.pages import auditor, board, finance, provider, signin, staff

ROUTERS: list[APIRouter] = [
    signin.router,
    provider.router,
    staff.router,
    finance.router,
    board.router,
    auditor.router,
]
