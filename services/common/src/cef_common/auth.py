"""Bearer-token authentication and scope authorisation; the only module that uses python-jose.

Verification is deliberately narrow: an explicit allow-list of asymmetric algorithms, keys only
from configured issuers, every registered claim required, tokens bounded in size."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import structlog
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from jose import jwk, jws, jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from cef_common.devtokens import TokenSigner as TokenSigner
from cef_common.devtokens import dev_issuer_key_path as dev_issuer_key_path
from cef_common.devtokens import ensure_dev_issuer as ensure_dev_issuer
from cef_common.devtokens import mint_dev_token as mint_dev_token
from cef_common.errors import Forbidden, Unauthorized
from cef_common.keys import SigningKey, load_signing_key
from cef_common.settings import BaseServiceSettings, TrustedIssuer

log = structlog.get_logger(__name__)

MAX_TOKEN_BYTES = 8 * 1024
ALLOWED_ALGORITHMS = frozenset({"ES256", "RS256"})
_KTY_FOR_ALG = {"ES256": "EC", "RS256": "RSA"}
UNKNOWN_KID_REFRESH_SECONDS = 10.0


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by a verified token."""

    sub: str
    issuer: str
    scopes: frozenset[str]
    org: str | None = None
    client: str | None = None
    token_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has(self, *scopes: str) -> bool:
        return all(s in self.scopes for s in scopes)

    def actor(self) -> dict[str, str | None]:
        return {"sub": self.sub, "org": self.org, "client": self.client, "issuer": self.issuer}


class JwksCache:
    """Public keys of one issuer, cached; re-read when a token names a key id it does not know."""

    def __init__(
        self, issuer: TrustedIssuer, *, ttl: float, fetch: Callable[[str], dict[str, Any]] | None = None
    ):
        self.issuer = issuer
        self.ttl = ttl
        self._fetch_url = fetch or _fetch_jwks_url
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded_at: float | None = None
        self._last_forced = float("-inf")
        self._failed_at = float("-inf")
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self.issuer.jwks_file is not None:
            data = json.loads(Path(self.issuer.jwks_file).read_text())
        else:
            assert self.issuer.jwks_url is not None
            data = self._fetch_url(self.issuer.jwks_url)
        if not isinstance(data, dict) or not isinstance(data.get("keys", []), list):
            raise ValueError("a JWKS must be a JSON object with a 'keys' list")
        keys = {}
        for k in data.get("keys", []):
            if isinstance(k, dict) and "kid" in k:
                keys[str(k["kid"])] = k
        self._keys = keys
        self._loaded_at = time.monotonic()

    def key(self, kid: str) -> dict[str, Any] | None:
        with self._lock:
            now = time.monotonic()
            due = self._loaded_at is None or now - self._loaded_at > self.ttl
            unknown = kid not in self._keys and now - self._last_forced > UNKNOWN_KID_REFRESH_SECONDS
            # After a failure, requests are not each made to wait for an issuer that is down (the
            # fetch holds the lock): the keys in hand serve, and the next attempt waits a while.
            if (due or unknown) and now - self._failed_at > UNKNOWN_KID_REFRESH_SECONDS:
                if not due:
                    self._last_forced = now
                try:
                    self._load()
                except (OSError, ValueError, httpx.HTTPError) as exc:
                    self._failed_at = now
                    log.warning("jwks_unavailable", issuer=self.issuer.issuer, error=type(exc).__name__)
            return self._keys.get(kid)


def _fetch_jwks_url(url: str) -> dict[str, Any]:
    r = httpx.get(url, timeout=5.0)
    r.raise_for_status()
    data = r.json()
    if not isinstance(data, dict):
        raise ValueError("JWKS is not an object")
    return data


class TokenVerifier:
    """Verifies bearer tokens addressed to one audience (this service)."""

    def __init__(
        self,
        *,
        audience: str,
        issuers: Iterable[TrustedIssuer],
        leeway: int = 30,
        jwks_ttl: float = 300,
        fetch: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.audience = audience
        self.leeway = leeway
        self._issuers = {i.issuer: i for i in issuers}
        self._caches = {name: JwksCache(i, ttl=jwks_ttl, fetch=fetch) for name, i in self._issuers.items()}

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> TokenVerifier:
        return cls(
            audience=settings.service_name,
            issuers=settings.all_trusted_issuers(),
            leeway=settings.jwt_leeway_seconds,
            jwks_ttl=settings.jwks_cache_seconds,
        )

    def verify(self, token: str) -> Principal:
        if len(token.encode("utf-8", "ignore")) > MAX_TOKEN_BYTES:
            raise Unauthorized("the token is larger than 8 KiB", reason="token-too-large")
        try:
            header = jws.get_unverified_header(token)
            unverified = jwt.get_unverified_claims(token)
        except (JOSEError, ValueError, TypeError):
            raise Unauthorized("the token is not a well-formed JWT", reason="malformed-token") from None
        alg = header.get("alg")
        # A header is attacker-controlled JSON: `alg` may be a list or an object.
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized(
                # Not quoted: the header is the caller's text.
                "the token's signature algorithm (alg) is not accepted; use ES256 or RS256",
                reason="algorithm-refused",
            )
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized("the token's issuer is not trusted by this service", reason="untrusted-issuer")
        if alg not in issuer.algorithms:
            raise Unauthorized(f"issuer {iss!r} may not sign with {alg}", reason="algorithm-refused")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("the token has no key id (kid)", reason="no-key-id")
        key_data = self._caches[issuer.issuer].key(kid)
        if key_data is None:
            raise Unauthorized("the token's signing key is not known for its issuer", reason="unknown-key")
        if key_data.get("kty") != _KTY_FOR_ALG[alg] or key_data.get("alg", alg) != alg:
            raise Unauthorized("the token's algorithm does not match its key", reason="algorithm-refused")
        try:
            key = jwk.construct(key_data, algorithm=alg)
            verified = json.loads(jws.verify(token, key, algorithms=[alg]))
        except (JOSEError, ValueError, TypeError):
            raise Unauthorized("the token's signature does not verify", reason="bad-signature") from None
        if not isinstance(verified, dict):
            raise Unauthorized("the token's payload is not a JSON object", reason="malformed-token")
        # From here the signature holds: a refusal may name the caller the claims say it is.
        for claim in ("iss", "sub", "aud", "exp", "iat"):
            if claim not in verified:
                raise Unauthorized(
                    f"the token has no {claim!r} claim; every token needs iss, sub, aud, exp and iat",
                    reason=f"missing-claim-{claim}",
                    verified_claims=verified,
                )
        try:
            # The signature was verified just above with this key and algorithm; this checks the
            # claims (audience, issuer, expiry, not-before) without doing that work twice.
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=issuer.issuer,
                options={
                    "verify_signature": False,
                    "require_iss": True,
                    "require_sub": True,
                    "require_aud": True,
                    "require_exp": True,
                    "require_iat": True,
                    "leeway": self.leeway,
                },
            )
        except ExpiredSignatureError:
            raise Unauthorized("the token has expired", reason="expired", verified_claims=verified) from None
        except JWTClaimsError as exc:
            if "audience" in str(exc).lower():
                raise Unauthorized(
                    f"the token is not addressed to this service: ask for a token with aud {self.audience!r}",
                    reason="wrong-audience",
                    verified_claims=verified,
                ) from None
            raise Unauthorized(
                f"the token's claims are not acceptable: {exc}",
                reason="claims-refused",
                verified_claims=verified,
            ) from None
        except (JOSEError, ValueError, TypeError):
            raise Unauthorized(
                "the token's claims are not acceptable", reason="claims-refused", verified_claims=verified
            ) from None
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or iat > time.time() + self.leeway:
            raise Unauthorized(
                "the token is not yet valid (iat in the future)",
                reason="not-yet-valid",
                verified_claims=claims,
            )
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        if issuer.allowed_scopes is not None:
            scopes = scopes & frozenset(issuer.allowed_scopes)
        org = claims.get("org")
        client = claims.get("client_id") or claims.get("azp")
        return Principal(
            sub=str(claims["sub"]),
            issuer=issuer.issuer,
            scopes=scopes,
            org=str(org) if org else None,
            client=str(client) if client else None,
            token_id=str(claims["jti"]) if claims.get("jti") else None,
            claims=claims,
        )


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized(
            "no bearer token: send 'Authorization: Bearer <JWT>'", error="invalid_request", reason="no-token"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "the Authorization header must be 'Bearer <JWT>'", error="invalid_request", reason="not-bearer"
        )
    return token.strip()


async def get_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller (401 problem+json otherwise)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    verifier: TokenVerifier = request.app.state.verifier
    # Async so the binding below lands in the request's own context (a sync dependency runs in a
    # copied context, and the caller would be missing from every later log line); verification
    # may read or fetch a JWKS, so it runs off the event loop.
    principal = await run_in_threadpool(verifier.verify, _bearer(request))
    request.state.principal = principal
    structlog.contextvars.bind_contextvars(caller=principal.sub, caller_org=principal.org)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True)
class ScopeRequirement:
    """The scopes a `require_scopes` guard asks for: every one of them, or any one with `any_of`."""

    scopes: tuple[str, ...]
    any_of: bool = False


# The attribute a guard carries its ScopeRequirement under: the OpenAPI document (cef_common.openapi)
# lists the scopes of each route from its guards, so the document cannot drift from the code.
_SCOPE_REQUIREMENT = "scope_requirement"


def require_scopes(*scopes: str, any_of: bool = False) -> Callable[[Principal], Principal]:
    """A dependency that passes the principal on when it holds the scopes (403 otherwise)."""

    def _guard(principal: PrincipalDep) -> Principal:
        ok = any(s in principal.scopes for s in scopes) if any_of else principal.has(*scopes)
        if not ok:
            joined = " or ".join(scopes) if any_of else " and ".join(scopes)
            raise Forbidden(f"this request needs the scope {joined}", code="insufficient-scope")
        return principal

    setattr(_guard, _SCOPE_REQUIREMENT, ScopeRequirement(scopes, any_of))
    return _guard


def scope_requirement(dependency: object) -> ScopeRequirement | None:
    """The scopes a dependency made by `require_scopes` asks for; None for any other callable."""
    found = getattr(dependency, _SCOPE_REQUIREMENT, None)
    return found if isinstance(found, ScopeRequirement) else None


def ensure_org(principal: Principal, org: str, *, what: str = "this resource") -> None:
    """403 unless the caller belongs to `org`."""
    if principal.org is None or principal.org.upper() != org.upper():
        raise Forbidden(
            # `org` is not quoted: it may be a value the caller typed where a code belongs.
            f"{what} belongs to another organisation than the caller's",
            code="other-organisation",
        )


class ServiceTokens:
    """This service's own short-lived tokens for the calls it makes, cached until near expiry."""

    def __init__(self, signer: TokenSigner, service: str, ttl_seconds: int = 300) -> None:
        self.signer = signer
        self.service = service
        self.ttl = min(ttl_seconds, 300)
        self._cache: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token_for(self, audience: str, scopes: Iterable[str]) -> str:
        key = (audience, frozenset(scopes))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[1] - now > 30:
                return hit[0]
            token = self.signer.mint(
                sub=self.service, audience=audience, scopes=key[1], ttl_seconds=self.ttl, client=self.service
            )
            self._cache[key] = (token, now + self.ttl)
            return token

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> ServiceTokens:
        key = load_signing_key(settings.effective_signing_key_file, create=not settings.is_production)
        return cls(
            TokenSigner(key, settings.service_name), settings.service_name, settings.service_token_ttl_seconds
        )


# --- detached signatures over arbitrary payloads (e.g. the audit log's signed checkpoints) ---------


def sign_jws(key: SigningKey, payload: bytes, *, headers: dict[str, Any] | None = None) -> str:
    """A JWS compact serialisation of `payload`, signed ES256 with `key` (its kid in the header)."""
    headers = {**(headers or {}), "kid": key.kid}
    signed = jws.sign(payload, key.private_pem, headers=headers, algorithm="ES256")
    return str(signed)


def verify_jws(token: str, jwks: dict[str, Any], *, algorithms: Iterable[str] = ("ES256",)) -> bytes:
    """The payload of a JWS compact serialisation signed by a key of `jwks`; ValueError otherwise."""
    allowed = frozenset(algorithms) & ALLOWED_ALGORITHMS
    try:
        header = jws.get_unverified_header(token)
    except (JOSEError, ValueError, TypeError):
        raise ValueError("not a JWS compact serialisation") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in allowed:
        raise ValueError(f"signature algorithm {alg!r} is not accepted")
    candidates = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if not candidates:
        raise ValueError(f"no key with kid {kid!r} to verify the signature")
    key_data = candidates[0]
    if key_data.get("kty") != _KTY_FOR_ALG[alg] or key_data.get("alg", alg) != alg:
        raise ValueError("the signature's algorithm does not match its key")
    try:
        payload = jws.verify(token, jwk.construct(key_data, algorithm=alg), algorithms=[alg])
    except (JOSEError, ValueError, TypeError):
        raise ValueError("the signature does not verify") from None
    return payload if isinstance(payload, bytes) else str(payload).encode()
