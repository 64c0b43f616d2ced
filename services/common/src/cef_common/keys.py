"""Asymmetric signing keys on disk: create on first use (development), load, and publish as JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """An EC P-256 private key with its RFC 7638 thumbprint as key id."""

    private_pem: str
    kid: str
    public_jwk: dict[str, Any]

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("signing keys must be EC P-256 (ES256)")
        numbers = key.public_key().public_numbers()
        x = _b64url(numbers.x.to_bytes(32, "big"))
        y = _b64url(numbers.y.to_bytes(32, "big"))
        thumb = json.dumps(
            {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
        )
        kid = _b64url(hashlib.sha256(thumb.encode()).digest())
        jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}
        return cls(private_pem=pem.decode("ascii"), kid=kid, public_jwk=jwk)

    @classmethod
    def generate(cls) -> SigningKey:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls.from_pem(pem)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_signing_key(path: Path, *, create: bool) -> SigningKey:
    """Loads the PEM at `path`; creates it (mode 0600) and a JWKS beside it when `create` is set."""
    if path.exists():
        key = SigningKey.from_pem(path.read_bytes())
    elif create:
        key = SigningKey.generate()
        _write_private(path, key.private_pem.encode("ascii"))
    else:
        raise FileNotFoundError(f"signing key {path} does not exist; create one or set SIGNING_KEY_FILE")
    jwks_path = jwks_path_for(path)
    jwks = json.dumps(key.jwks(), indent=2)
    try:
        if not jwks_path.exists() or jwks_path.read_text() != jwks:
            jwks_path.write_text(jwks)
    except OSError:
        # Keys mounted read-only (a secrets volume) need no file beside them: the service
        # publishes its JWKS from the key itself; only `cef up`'s peers read the file.
        pass
    return key


def jwks_path_for(private_key_path: Path) -> Path:
    return private_key_path.with_name(private_key_path.stem + ".jwks.json")
