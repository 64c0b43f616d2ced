"""A database that cannot be reached answers 503 database-unavailable (retry), not an internal
error; any other database error stays a 500."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from cef_common.errors import install_error_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/away")
    def away() -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    @app.get("/dropped")
    def dropped() -> None:
        raise sa.exc.DBAPIError(
            "SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True
        )

    @app.get("/constraint")
    def constraint() -> None:
        raise sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    return app


async def test_the_database_away_is_503_and_says_to_retry() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in ("/away", "/dropped"):
            r = await client.get(path)
            assert r.status_code == 503, path
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "5"
            assert r.json()["code"] == "database-unavailable"
            assert "try again" in r.json()["detail"]
            assert "connection" not in r.json()["detail"]  # the driver's message is not passed on
        r = await client.get("/constraint")
        assert r.status_code == 500
        assert r.json()["code"] == "internal-error"
