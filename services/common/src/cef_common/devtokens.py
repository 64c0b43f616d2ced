"""Minting ES256 tokens, and the development issuer of `cef up`, without the web stack.

Kept apart from `cef_common.auth` (which re-exports these names) so that `cef token` and the
other CLI commands mint a token with python-jose and cryptography alone, never importing FastAPI
or httpx."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cef_common.keys import SigningKey, load_signing_key

# The development issuer's name; `cef_common.settings` trusts it when DEV_ISSUER_ENABLED is set.
DEV_ISSUER = "cef-dev"


class TokenSigner:
    """Mints ES256 tokens with one key."""

    def __init__(self, key: SigningKey, issuer: str) -> None:
        self.key = key
        self.issuer = issuer

    def mint(
        self,
        *,
        sub: str,
        audience: str,
        scopes: Iterable[str],
        ttl_seconds: int,
        org: str | None = None,
        client: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        from jose import jwt

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(sorted(set(scopes))),
        }
        if org:
            claims["org"] = org
        if client:
            claims["client_id"] = client
        if extra:
            claims.update(extra)
        return str(jwt.encode(claims, self.key.private_pem, algorithm="ES256", headers={"kid": self.key.kid}))


def dev_issuer_key_path(keys_dir: Path) -> Path:
    return keys_dir / f"{DEV_ISSUER}.pem"


def ensure_dev_issuer(keys_dir: Path) -> TokenSigner:
    """Creates (on first use) and returns the development issuer's signer under `keys_dir`."""
    return TokenSigner(load_signing_key(dev_issuer_key_path(keys_dir), create=True), DEV_ISSUER)


def mint_dev_token(
    keys_dir: Path,
    *,
    scopes: Iterable[str],
    audience: str,
    sub: str = "developer",
    org: str | None = None,
    ttl_seconds: int = 3600,
) -> str:
    path = dev_issuer_key_path(keys_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"no development issuer under {keys_dir}: start `cef up` with this data directory first"
        )
    signer = TokenSigner(load_signing_key(path, create=False), DEV_ISSUER)
    return signer.mint(
        sub=sub, audience=audience, scopes=scopes, ttl_seconds=ttl_seconds, org=org, client="cef-cli"
    )
