"""Settings of the tokeniser service (environment variables prefixed CEF_TOKENISER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from cef_common.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_TOKENISER_", env_file=".env", extra="ignore")

    service_name: str = "tokeniser"
    port: int = 8001
    audit_url: str = "http://127.0.0.1:8003"
