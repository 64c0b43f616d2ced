"""The audit service: app factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from cef_common.app import ServiceSpec, create_service_app
from cef_audit.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF audit",
            description="Append-only, tamper-evident log of every access to patient data.",
            migrations=MIGRATIONS,
            routers=[],
            audit_url=None,
        )
    )
