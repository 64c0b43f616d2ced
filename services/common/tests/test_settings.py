"""Settings: read from the environment with the service's prefix, refusing unsafe production setups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cef_common.auth import ServiceTokens
from cef_common.settings import DEV_ISSUER, TrustedIssuer


def test_the_dev_issuer_in_production_is_refused(settings_cls: Any) -> None:
    with pytest.raises(ValidationError, match="development token issuer is enabled in a production setting"):
        settings_cls(environment="production", dev_issuer_enabled=True)


def test_the_dev_issuer_in_production_is_refused_from_the_environment(
    settings_cls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEF_COMMONTEST_ENVIRONMENT", "production")
    monkeypatch.setenv("CEF_COMMONTEST_DEV_ISSUER_ENABLED", "true")
    with pytest.raises(ValidationError, match="TRUSTED_ISSUERS"):
        settings_cls()


def test_service_tokens_may_live_at_most_five_minutes(settings_cls: Any) -> None:
    with pytest.raises(ValidationError, match="300 seconds"):
        settings_cls(service_token_ttl_seconds=301)


def test_an_unknown_environment_is_refused(settings_cls: Any) -> None:
    with pytest.raises(ValidationError):
        settings_cls(environment="staging")  # type: ignore[arg-type]


def test_settings_come_from_the_prefixed_environment(
    settings_cls: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    issuers = [
        {
            "issuer": "https://idp.example.nhs.uk",
            "jwks_url": "https://idp.example.nhs.uk/jwks",
            "algorithms": ["RS256"],
        },
        {
            "issuer": "cef-api",
            "jwks_file": str(tmp_path / "cef-api.jwks.json"),
            "allowed_scopes": ["audit:write"],
        },
    ]
    monkeypatch.setenv("CEF_COMMONTEST_TRUSTED_ISSUERS", json.dumps(issuers))
    monkeypatch.setenv("CEF_COMMONTEST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CEF_COMMONTEST_MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("ENVIRONMENT", "production")  # unprefixed: not ours
    settings = settings_cls()
    assert settings.environment == "development"
    assert settings.max_body_bytes == 1024
    assert settings.trusted_issuers[0].algorithms == ["RS256"]
    assert settings.trusted_issuers[1].allowed_scopes == ["audit:write"]
    assert settings.effective_database_url == f"sqlite:///{(tmp_path / 'common-test.db').resolve()}"
    assert settings.effective_signing_key_file == tmp_path / "keys" / "common-test.pem"


def test_the_dev_issuer_is_trusted_only_when_enabled(settings_cls: Any, tmp_path: Path) -> None:
    assert [i.issuer for i in settings_cls(data_dir=tmp_path).all_trusted_issuers()] == []
    issuers = settings_cls(data_dir=tmp_path, dev_issuer_enabled=True).all_trusted_issuers()
    assert [(i.issuer, i.jwks_file) for i in issuers] == [
        (DEV_ISSUER, tmp_path / "keys" / "cef-dev.jwks.json")
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"jwks_file": "a.json", "jwks_url": "https://idp/jwks"}],
)
def test_an_issuer_needs_exactly_one_key_source(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="exactly one of jwks_file or jwks_url"):
        TrustedIssuer(issuer="idp", **kwargs)  # type: ignore[arg-type]


def test_an_issuer_may_only_use_asymmetric_algorithms() -> None:
    with pytest.raises(ValidationError):
        TrustedIssuer(issuer="idp", jwks_url="https://idp/jwks", algorithms=["HS256"])  # type: ignore[list-item]


def test_production_never_creates_a_signing_key(
    settings_cls: Any, build_service_app: Any, tmp_path: Path
) -> None:
    settings = settings_cls(environment="production", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ServiceTokens.from_settings(settings)
    with pytest.raises(FileNotFoundError):
        build_service_app(settings)
    assert not (tmp_path / "keys").exists()


def test_development_creates_its_signing_key(settings_cls: Any, tmp_path: Path) -> None:
    ServiceTokens.from_settings(settings_cls(data_dir=tmp_path))
    assert (tmp_path / "keys" / "common-test.pem").exists()
    assert (tmp_path / "keys" / "common-test.jwks.json").exists()
