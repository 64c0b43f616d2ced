"""The tokeniser service: app factory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI

from cef_common.app import ServiceSpec, create_service_app
from cef_tokeniser.config import Settings
from cef_tokeniser.keys import KeyRing, load_master_key
from cef_tokeniser.metrics import Reidentifications
from cef_tokeniser.tokens.router import router as tokens_router
from cef_tokeniser.tokens.service import StoredTokenCache, TokenService

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Read now, so a missing or malformed master key stops the service before it listens.
    master = load_master_key(settings)

    @contextmanager
    def lifespan(app: FastAPI) -> Iterator[None]:
        keyring = KeyRing(app.state.engine, master)
        keyring.check_master_key()
        relay = app.state.outbox_relay
        app.state.token_service = TokenService(
            engine=app.state.engine,
            keyring=keyring,
            cache=StoredTokenCache(settings.stored_token_cache_size),
            on_audit=relay.wake if relay is not None else (lambda: None),
        )
        yield

    app = create_service_app(
        ServiceSpec(
            settings=settings,
            title="CEF tokeniser",
            description=(
                "Turns NHS numbers, dates of birth and postcodes into keyed tokens; "
                "re-identifies only for authorised, audited callers."
            ),
            migrations=MIGRATIONS,
            routers=[tokens_router],
            audit_url=settings.audit_url,
            lifespan=lifespan,
        )
    )
    app.state.reidentifications = Reidentifications(app.state.metrics.registry)
    return app
