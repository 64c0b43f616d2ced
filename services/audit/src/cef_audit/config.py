"""Settings of the audit service (environment variables prefixed CEF_AUDIT_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cef_common.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_AUDIT_", env_file=".env", extra="ignore")

    service_name: str = "audit"
    port: int = 8003

    # A signed checkpoint is issued once this many events have been appended since the last one…
    checkpoint_every_events: int = Field(default=1000, ge=1)
    # …and, when anything was appended, at least this often (0 turns the timer off).
    checkpoint_interval_seconds: float = Field(default=60.0, ge=0)
    # The largest batch one POST /v1/events may carry (the relay sends 1,000 at a time).
    max_batch_events: int = Field(default=10_000, ge=1)
    # Body limit of POST /v1/events; larger bodies are refused with 413.
    max_events_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Rows an export streams at most; narrow the filters for more.
    max_export_events: int = Field(default=1_000_000, ge=1)
    # Move everything alive once the service has started out of the cyclic garbage collector's
    # reach (gc.freeze): appends allocate thousands of objects a batch, and every full collection
    # otherwise walks the whole application's heap again, about a fifth of the batched append's CPU.
    # None: on, except in the test environment, where many apps share one pytest process.
    gc_freeze_at_startup: bool | None = None

    @property
    def effective_gc_freeze(self) -> bool:
        if self.gc_freeze_at_startup is None:
            return self.environment != "test"
        return self.gc_freeze_at_startup
