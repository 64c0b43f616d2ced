"""Settings of the web app (environment variables prefixed CEF_WEB_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from cef_common.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_WEB_", env_file=".env", extra="ignore")

    service_name: str = "web"
    port: int = 8000
    # A submitted backing file goes through the web app to the CEF API: the same limit.
    max_body_bytes: int = Field(
        default=200 * 1024 * 1024,
        description="As for every service; this service's default. An invoice's backing CSV is "
        "passed through to the CEF API, whose own limit is the same.",
    )

    cef_api_url: str = Field(default="http://127.0.0.1:8002", description="Where the CEF API is.")
    audit_url: str = Field(default="http://127.0.0.1:8003", description="Where the audit service is.")

    # Sign-in in production: OpenID Connect, authorization code with PKCE.
    oidc_issuer: str | None = Field(
        default=None,
        description="The OpenID provider's issuer URL (e.g. NHS CIS2); its discovery document is read "
        "from <issuer>/.well-known/openid-configuration. Unset: no OIDC sign-in.",
    )
    oidc_client_id: str | None = Field(default=None, description="This app's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="This app's client secret (client_secret_basic); unset: a public client."
    )
    oidc_client_secret_file: Path | None = Field(
        default=None,
        description="A file holding the client secret (a container secret), instead of OIDC_CLIENT_SECRET.",
    )
    oidc_scopes: list[str] = Field(
        default_factory=lambda: [
            "openid",
            "profile",
            "org",
            "invoices:submit",
            "invoices:validate",
            "invoices:read",
            "reports:read",
            "audit:read",
        ],
        description="Scopes asked of the provider; what it grants decides the person's roles.",
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"], description="Signature algorithms accepted on ID tokens."
    )

    session_idle_minutes: int = Field(
        default=30, ge=1, description="A session unused this long ends; the person signs in again."
    )
    session_max_hours: float = Field(
        default=12, gt=0, description="A session ends this long after sign-in, however busy."
    )
    cookie_secure: bool | None = Field(
        default=None,
        description="Mark the session cookie Secure (HTTPS only). Unset: everywhere but development.",
    )
    page_size: int = Field(default=50, ge=5, le=500, description="Rows per page of a table.")

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_client_secret_file is not None:
            if self.oidc_client_secret is not None:
                raise ValueError(
                    "give the OIDC client secret once: OIDC_CLIENT_SECRET or OIDC_CLIENT_SECRET_FILE"
                )
            try:
                secret = self.oidc_client_secret_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"OIDC_CLIENT_SECRET_FILE {self.oidc_client_secret_file} cannot be read: {exc.strerror}"
                ) from None
            if not secret:
                raise ValueError(f"OIDC_CLIENT_SECRET_FILE {self.oidc_client_secret_file} is empty")
            self.oidc_client_secret = SecretStr(secret)
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("OIDC_ISSUER is set without OIDC_CLIENT_ID: give the client id registered there")
        if self.is_production and not self.oidc_issuer:
            raise ValueError(
                "production needs a sign-in: set OIDC_ISSUER and OIDC_CLIENT_ID (the development "
                "sign-in page is refused in production)"
            )
        if self.is_production and self.cookie_secure is False:
            raise ValueError("production refuses COOKIE_SECURE=false: the session cookie must be HTTPS-only")
        return self

    @property
    def effective_cookie_secure(self) -> bool:
        if self.cookie_secure is None:
            return self.environment != "development"
        return self.cookie_secure

    @property
    def public_base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
