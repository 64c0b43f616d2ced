"""`uvicorn --factory factory_app:create_app` for the test service, settings from CEF_COMMONTEST_*."""

from __future__ import annotations

from conftest import CommonTestSettings, build_app
from fastapi import FastAPI


def create_app() -> FastAPI:
    return build_app(CommonTestSettings())
