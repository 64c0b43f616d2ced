"""Settings of the tokeniser service (environment variables prefixed CEF_TOKENISER_)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from cef_common.settings import DEV_ISSUER, BaseServiceSettings

CONTEXT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

# Where `cef up` writes the development master key (cef_tokeniser.keys.ensure_dev_master_key).
DEV_MASTER_KEY_NAME = "tokeniser-master.key"

# Clients of the development issuer: `cef token` mints client "cef-cli", the test issuer "tests".
DEVELOPMENT_CLIENT_CONTEXTS: dict[str, list[str]] = {"cef-cli": ["cef"], "tests": ["cef", "research"]}


def _default_client_contexts() -> dict[str, list[str]]:
    return {"cef-api": ["cef"]}


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_TOKENISER_", env_file=".env", extra="ignore")

    service_name: str = "tokeniser"
    port: int = 8001
    audit_url: str = "http://127.0.0.1:8003"

    # The master key (256 bits, hex) wraps the data keys stored in the database. Give one of the
    # two; outside production the development key `cef up` creates under data_dir is the fallback.
    master_key_file: Path | None = None
    master_key: SecretStr | None = None

    # Contexts separate recipients: the same identifier gives unlinkable tokens in two contexts.
    default_context: str = "cef"
    # Which contexts each client (the token's client_id, else its sub) may use. Outside
    # production, and unless set explicitly, the development clients are added.
    client_contexts: dict[str, list[str]] = Field(default_factory=_default_client_contexts)

    # Who may re-identify (POST /v1/detokenise): peer services only, never people. A caller is one
    # of these when its verified token was issued by that name and names it as its client, as a
    # peer's own service tokens do (issuer = client = its service name); the scope alone is not
    # enough. People re-identify through the CEF API, which calls here on their behalf.
    detokenise_clients: list[str] = Field(default_factory=lambda: ["cef-api"])

    # 100,000 NHS numbers are about 1.4 MB of JSON; this leaves room for batches of a million.
    max_body_bytes: int = 64 * 1024 * 1024
    max_batch_values: int = 1_000_000
    # Tokens known to have their original stored, so repeat batches skip the database
    # (about 110 bytes each: the default holds two million patients in some 220 MB).
    stored_token_cache_size: int = 2_000_000

    @model_validator(mode="after")
    def _check_tokeniser(self) -> Settings:
        if self.master_key is not None and self.master_key_file is not None:
            raise ValueError("give the master key either as MASTER_KEY or as MASTER_KEY_FILE, not both")
        if self.is_production:
            if self.master_key is None and self.master_key_file is None:
                raise ValueError(
                    "the tokeniser needs a master key in production: set CEF_TOKENISER_MASTER_KEY_FILE "
                    "(or CEF_TOKENISER_MASTER_KEY) to a 256-bit key kept outside the data directory"
                )
            if self.master_key_file is not None and (
                self.master_key_file.resolve() == self.dev_master_key_file.resolve()
            ):
                raise ValueError(
                    f"{self.master_key_file} is the development master key `cef up` creates; "
                    "production needs a key generated and held by your key management process"
                )
        elif "client_contexts" not in self.model_fields_set:
            self.client_contexts = {**DEVELOPMENT_CLIENT_CONTEXTS, **self.client_contexts}
        if DEV_ISSUER in self.detokenise_clients:
            raise ValueError(
                f"{DEV_ISSUER!r} is the development issuer of people's tokens: DETOKENISE_CLIENTS lists "
                "peer services (e.g. cef-api), which re-identify on a person's behalf"
            )
        contexts = {self.default_context} | {c for cs in self.client_contexts.values() for c in cs}
        bad = sorted(c for c in contexts if not CONTEXT_PATTERN.match(c))
        if bad:
            raise ValueError(
                f"context names must be lower-case letters, digits, '.', '_' or '-' (at most 64): {bad}"
            )
        return self

    @property
    def dev_master_key_file(self) -> Path:
        return self.keys_dir / DEV_MASTER_KEY_NAME

    @property
    def effective_master_key_file(self) -> Path | None:
        """The file to read the master key from (None when it is given inline)."""
        if self.master_key is not None:
            return None
        if self.master_key_file is not None:
            return self.master_key_file
        return None if self.is_production else self.dev_master_key_file

    def may_detokenise(self, *, issuer: str, client: str | None) -> bool:
        """Whether a verified caller is one of the peers granted re-identification."""
        return issuer in self.detokenise_clients and client == issuer

    def known_contexts(self) -> frozenset[str]:
        """Every context this tokeniser is configured with (the default and every client's)."""
        return frozenset({self.default_context, *(c for cs in self.client_contexts.values() for c in cs)})

    def contexts_for(self, client: str) -> frozenset[str]:
        return frozenset(self.client_contexts.get(client, ()))
