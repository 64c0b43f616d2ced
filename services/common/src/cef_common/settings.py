"""Settings shared by every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cef_common.devtokens import DEV_ISSUER as DEV_ISSUER

Environment = Literal["development", "test", "production"]

# Each service's /metrics port when METRICS_PORT is unset (a worker node, `cef worker`, uses 9004).
DEFAULT_METRICS_PORTS = {"web": 9000, "tokeniser": 9001, "cef-api": 9002, "audit": 9003}
WORKER_METRICS_PORT = 9004


class TrustedIssuer(BaseModel):
    """An issuer whose tokens this service accepts, and where its public keys are."""

    issuer: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: list[Literal["ES256", "RS256"]] = Field(default_factory=lambda: ["ES256"])  # type: ignore[arg-type]
    # When set, scopes outside this list are dropped from this issuer's tokens: a peer
    # service's key can then only ever grant what that peer legitimately needs.
    allowed_scopes: list[str] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TrustedIssuer:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError(f"issuer {self.issuer!r}: give exactly one of jwks_file or jwks_url")
        return self


class BaseServiceSettings(BaseSettings):
    """What every service needs. Subclasses set `model_config` with their env prefix."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    service_name: str = Field(
        default="service",
        description="The service's name: the audience of tokens it accepts and its issuer name.",
    )
    environment: Environment = Field(
        default="development",
        description="production refuses the development issuer and never creates keys.",
    )
    data_dir: Path = Field(
        default=Path("var"), description="Local state: the SQLite database and, outside production, keys."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql://… uses psycopg 3); unset: SQLite under DATA_DIR.",
    )
    host: str = Field(default="127.0.0.1", description="Interface `cef up` binds.")
    port: int = Field(default=8000, description="Port the service listens on.")
    public_url: str | None = Field(
        default=None, description="Where callers reach this service, if not HOST:PORT."
    )

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise."
    )

    # Tokens
    trusted_issuers: list[TrustedIssuer] = Field(
        default_factory=list,
        description='JSON list of {"issuer", "jwks_file" or "jwks_url", "algorithms" (ES256, RS256), '
        '"allowed_scopes"}: whose tokens are accepted, and what each may grant.',
    )
    dev_issuer_enabled: bool = Field(
        default=False, description="Trust the development issuer of `cef up` (refused in production)."
    )
    jwt_leeway_seconds: int = Field(default=30, description="Clock skew tolerated on exp, nbf and iat.")
    jwks_cache_seconds: int = Field(default=300, description="How long an issuer's keys are cached.")
    signing_key_file: Path | None = Field(
        default=None,
        description="This service's ES256 key (PEM) for the tokens it mints to call the others; "
        "unset: DATA_DIR/keys/<service>.pem, created outside production only.",
    )
    service_token_ttl_seconds: int = Field(
        default=300, description="Lifetime of this service's own tokens (at most 300)."
    )

    audit_relay_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="Audit events the outbox relay sends per request."
    )
    audit_relay_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the outbox relay looks for undelivered audit events."
    )
    audit_relay_max_backoff_seconds: float = Field(
        default=30.0, gt=0, description="The longest wait between delivery attempts while audit is down."
    )
    refusal_audit_limit: int = Field(
        default=20,
        ge=1,
        description="Refusals (401, 403, hidden 404) recorded per caller per window; beyond it they are "
        "counted and the count is recorded once the window closes.",
    )
    refusal_audit_window_seconds: float = Field(
        default=60.0, gt=0, description="The window over which refusal_audit_limit applies."
    )
    refusal_audit_max_callers: int = Field(
        default=10_000,
        ge=1,
        description="Callers whose refusals are counted apart; beyond it new callers share one count.",
    )

    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, description="Largest request body accepted (413 above)."
    )
    upload_idle_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the next part of a request body; a body that stalls longer is "
        "cut off with 408 and nothing of it is kept.",
    )

    # Outgoing HTTP
    http_connect_timeout: float = Field(default=5.0, description="Seconds to connect to a peer.")
    http_read_timeout: float = Field(default=60.0, description="Seconds to wait for a peer's answer.")
    http_retries: int = Field(
        default=3, description="Retries of a failed connection, or of 502/503/504 for idempotent calls."
    )

    # Observability (docs/observability.md)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics listener, apart from the service's own port; 0: off; "
        "unset: the service's default (web 9000, tokeniser 9001, cef-api 9002, audit 9003), off in the "
        "test environment.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Interface the /metrics listener binds (0.0.0.0 in a container)."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g. "
        "http://collector:4318); traces are exported to its /v1/traces. Unset: no traces are exported.",
    )
    otlp_headers: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object of headers sent with every export (e.g. {"Authorization": "Bearer …"}).',
    )
    otlp_timeout_seconds: float = Field(default=10.0, gt=0, description="Longest wait for one export.")
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded; a trace a caller started keeps the caller's decision.",
    )

    @model_validator(mode="after")
    def _refuse_dev_in_production(self) -> BaseServiceSettings:
        if self.environment == "production" and self.dev_issuer_enabled:
            raise ValueError(
                "the development token issuer is enabled in a production setting: "
                "unset DEV_ISSUER_ENABLED and configure TRUSTED_ISSUERS for a real identity provider"
            )
        if self.service_token_ttl_seconds > 300:
            raise ValueError("service tokens may live at most 300 seconds")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def effective_metrics_port(self) -> int:
        """The /metrics port (0: off): METRICS_PORT, else the service's default outside tests."""
        if self.metrics_port is not None:
            return self.metrics_port
        if self.environment == "test":
            # Many apps share one test process: each test that wants metrics gives a free port.
            return 0
        return DEFAULT_METRICS_PORTS.get(self.service_name, 0)

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{self.service_name}.db').resolve()}"

    @property
    def effective_signing_key_file(self) -> Path:
        return self.signing_key_file or self.keys_dir / f"{self.service_name}.pem"

    def all_trusted_issuers(self) -> list[TrustedIssuer]:
        issuers = list(self.trusted_issuers)
        if self.dev_issuer_enabled and not any(i.issuer == DEV_ISSUER for i in issuers):
            issuers.append(
                TrustedIssuer(issuer=DEV_ISSUER, jwks_file=self.keys_dir / f"{DEV_ISSUER}.jwks.json")
            )
        return issuers
