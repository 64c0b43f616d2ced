"""A small service built with the shared factory, so cef_common is tested the way services use it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict
from sqlalchemy import text

from cef_common.app import ServiceSpec, create_service_app
from cef_common.auth import Principal, ensure_org, require_scopes
from cef_common.db import SessionDep
from cef_common.errors import Conflict, NotFound
from cef_common.settings import BaseServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "common-test"


class CommonTestSettings(BaseServiceSettings):
    # Its own prefix and no .env file, so nothing in the developer's environment leaks in.
    model_config = SettingsConfigDict(env_prefix="CEF_COMMONTEST_", env_file=None, extra="ignore")

    service_name: str = SERVICE


class WidgetIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    count: int = 1
    fail_after_write: bool = False


router = APIRouter()
Reader = Annotated[Principal, Depends(require_scopes("things:read"))]
Writer = Annotated[Principal, Depends(require_scopes("things:write"))]


@router.get("/v1/whoami")
def whoami(principal: Reader) -> dict[str, Any]:
    return {
        "sub": principal.sub,
        "org": principal.org,
        "issuer": principal.issuer,
        "client": principal.client,
        "scopes": sorted(principal.scopes),
    }


@router.get("/v1/orgs/{org}/things")
def org_things(org: str, principal: Reader) -> dict[str, str]:
    ensure_org(principal, org, what="these things")
    return {"org": org}


@router.post("/v1/widgets", status_code=201)
def create_widget(body: WidgetIn, session: SessionDep, principal: Writer) -> dict[str, str]:
    session.execute(text("INSERT INTO common_test_widget (name) VALUES (:name)"), {"name": body.name})
    session.flush()
    if body.fail_after_write:
        raise Conflict(f"widget {body.name} was refused after it was written", code="widget-refused")
    return {"name": body.name}


@router.get("/v1/widgets")
def list_widgets(session: SessionDep, principal: Reader) -> list[str]:
    return [r[0] for r in session.execute(text("SELECT name FROM common_test_widget ORDER BY name"))]


@router.post("/v1/echo")
async def echo(request: Request, principal: Writer) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@router.get("/v1/missing")
def missing(principal: Reader) -> None:
    raise NotFound(
        "widget W1 does not exist; list /v1/widgets for the names",
        code="widget-not-found",
        extra={"widget": "W1"},
    )


@router.get("/v1/crash")
def crash(principal: Reader) -> None:
    raise RuntimeError("the message of an unexpected error: 943 476 5919")


@router.get("/v1/log")
def log_something(principal: Reader) -> dict[str, str]:
    structlog.get_logger("cef.test").info(
        "looked up 943 476 5919", patient={"nhs_number": "9434765919", "ids": [9434765919]}, raw=9434765919
    )
    return {"status": "logged"}


def make_settings(data_dir: Path, database_url: str | None, **overrides: Any) -> CommonTestSettings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "dev_issuer_enabled": True,
        "environment": "test",
        "log_format": "json",
    }
    values.update(overrides)
    return CommonTestSettings(**values)


def build_app(settings: BaseServiceSettings, body_limits: list[tuple[str, int]] | None = None) -> FastAPI:
    return create_service_app(
        ServiceSpec(
            settings=settings,
            title="cef_common test service",
            description="Exercises the shared library.",
            migrations=MIGRATIONS,
            routers=[router],
            body_limits=body_limits or [],
        )
    )


@pytest.fixture
def sqlite_url(database_factory: Any) -> str:
    return str(database_factory("sqlite", MIGRATIONS))


@pytest.fixture
def make_app(data_dir: Path, sqlite_url: str, dev_issuer: Any) -> Callable[..., FastAPI]:
    """Builds the test service on a migrated SQLite database; keyword arguments override settings."""

    def _make(body_limits: list[tuple[str, int]] | None = None, **overrides: Any) -> FastAPI:
        overrides.setdefault("database_url", sqlite_url)
        database_url = overrides.pop("database_url")
        return build_app(make_settings(data_dir, database_url, **overrides), body_limits)

    return _make


# Test modules are imported with --import-mode=importlib, so they reach these through fixtures.


@pytest.fixture
def migrations_dir() -> Path:
    return MIGRATIONS


@pytest.fixture
def settings_cls() -> type[CommonTestSettings]:
    return CommonTestSettings


@pytest.fixture
def build_service_app() -> Callable[..., FastAPI]:
    return build_app
