"""Settings of the audit service (environment variables prefixed CEF_AUDIT_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from cef_common.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_AUDIT_", env_file=".env", extra="ignore")

    service_name: str = "audit"
    port: int = 8003
