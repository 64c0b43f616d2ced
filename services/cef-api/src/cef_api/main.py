"""The cef-api service: app factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from cef_common.app import ServiceSpec, create_service_app
from cef_api.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF API",
            description="Reference data, invoice submission, line validation and the decision workflow.",
            migrations=MIGRATIONS,
            routers=[],
            audit_url=settings.audit_url,
        )
    )
