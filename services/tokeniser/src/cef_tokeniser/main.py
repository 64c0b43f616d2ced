"""The tokeniser service: app factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from cef_common.app import ServiceSpec, create_service_app
from cef_tokeniser.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF tokeniser",
            description="Turns NHS numbers, dates of birth and postcodes into keyed tokens; re-identifies only for authorised, audited callers.",
            migrations=MIGRATIONS,
            routers=[],
            audit_url=settings.audit_url,
        )
    )
