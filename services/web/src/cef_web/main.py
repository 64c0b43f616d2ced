"""The web app: app factory on the shared service ground (cef_common.app), plus pages and assets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from cef_common.app import ServiceSpec, create_service_app
from cef_web import errors, security
from cef_web.api import ServiceClient
from cef_web.auth import DelegatedTokens
from cef_web.config import Settings
from cef_web.pages import ROUTERS
from cef_web.sessions import SessionStore

MIGRATIONS = Path(__file__).parent / "migrations"
STATIC = Path(__file__).parent / "static"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.sessions = SessionStore(
        app.state.engine,
        secret=app.state.service_tokens.signer.key.private_pem.encode(),
        idle=timedelta(minutes=settings.session_idle_minutes),
        lifetime=timedelta(hours=settings.session_max_hours),
    )
    app.state.sessions.purge_expired()
    tokens = DelegatedTokens(app.state.service_tokens.signer)
    timeout = httpx.Timeout(settings.http_read_timeout, connect=settings.http_connect_timeout)
    async with (
        httpx.AsyncClient(base_url=settings.cef_api_url, timeout=timeout) as cef_api,
        httpx.AsyncClient(base_url=settings.audit_url, timeout=timeout) as audit,
    ):
        app.state.cef_api = ServiceClient(cef_api, tokens, "cef-api")
        app.state.audit_api = ServiceClient(audit, tokens, "audit")
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF web",
            description="The pages providers, CEF staff, finance, auditors and boards work in.",
            migrations=MIGRATIONS,
            routers=[],
            audit_url=settings.audit_url,
            async_lifespan=_lifespan,
        )
    )
    errors.install(app)
    security.install(app, settings)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(security.csrf_protect)], include_in_schema=False)
    app.mount("/assets", StaticFiles(directory=STATIC / "nhsuk"), name="assets")
    app.mount("/static", StaticFiles(directory=STATIC / "app"), name="static")
    return app
