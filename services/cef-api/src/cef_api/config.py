"""Settings of the cef-api service (environment variables prefixed CEF_API_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from cef_common.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_API_", env_file=".env", extra="ignore")

    service_name: str = "cef-api"
    port: int = 8002
    audit_url: str = "http://127.0.0.1:8003"
    tokeniser_url: str = "http://127.0.0.1:8001"
