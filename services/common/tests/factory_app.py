"""`uvicorn --factory factory_app:create_app` for the test service, settings from CEF_COMMONTEST_*."""

from __future__ import annotations

from fastapi import FastAPI

from conftest import CommonTestSettings, build_app


def create_app() -> FastAPI:
    return build_app(CommonTestSettings())
