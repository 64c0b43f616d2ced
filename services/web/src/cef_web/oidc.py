"""Signing in through the organisation's OpenID provider: authorization code with PKCE (S256).

`OidcClient` is the web app's side of the protocol, kept apart from the pages that use it
(`cef_web.pages.oidc`): it reads the provider's discovery document and keys (both cached), builds
the authorization request with a fresh state, nonce and code verifier, exchanges the code (Authlib's
`AsyncOAuth2Client`, client_secret_basic or, without a secret, a public client), verifies the ID
token (its signature against the provider's JWKS with joserfc; issuer, audience, expiry, nonce, azp
and at_hash with Authlib's `CodeIDToken`) and reads userinfo.

Every way a sign-in can be refused raises `Forbidden` with its own code, so the refusal's audit
event (the app's refusal hook) says why without quoting anything the provider or browser sent. A
provider that cannot be reached is not a refusal: `ServiceUnavailable`, a 503 page."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import structlog
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from fastapi import Request
from joserfc import jwt
from joserfc.errors import ClaimError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from cef_common.errors import Forbidden, ServiceUnavailable
from cef_web.config import Settings

log = structlog.get_logger(__name__)

# Where the pending sign-in lives in the session's pending data, and how long it may take.
PENDING_KEY = "oidc"
PENDING_SECONDS = 600
# Signature algorithms an ID token may use, whatever is configured: asymmetric ones only, so a
# provider's public key can never be used as an HMAC secret, and never `none`.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})
MAX_TOKEN_BYTES = 16 * 1024
METADATA_SECONDS = 3600.0
# A token naming a key id we do not hold re-reads the JWKS (the provider rotated its keys), but
# no more often than this, so forged key ids cannot make us hammer the provider.
UNKNOWN_KID_REFRESH_SECONDS = 10.0
# The OAuth 2.0 and OpenID Connect error codes a provider may send back; anything else is not echoed.
KNOWN_ERRORS = frozenset(
    {
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
    }
)

UNREACHABLE = (
    "the NHS sign-in service could not be reached, so you cannot sign in just now; try again in a few "
    "minutes, and if it keeps happening tell the service desk"
)


def refused(detail: str, code: str) -> Forbidden:
    """A refused sign-in: a 403 page, audited with `code` as the reason."""
    return Forbidden(f"{detail}. Go back to the sign-in page and sign in again", code=code)


@dataclass(frozen=True)
class ProviderMetadata:
    """What this app uses of the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    # RFC 9207: the provider names itself in its authorization response (`iss`).
    iss_parameter_supported: bool


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and what to keep in its session until it comes back."""

    url: str
    pending: dict[str, Any]


@dataclass(frozen=True)
class VerifiedSignIn:
    """A sign-in whose ID token verified: who the provider says the person is and what it granted."""

    sub: str
    claims: dict[str, Any]
    scopes: frozenset[str]
    tokens: dict[str, Any]


def _endpoint(document: Mapping[str, Any], name: str, *, required: bool, https: bool) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"the discovery document has no {name}")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc or (https and parts.scheme != "https"):
        raise ValueError(f"the discovery document's {name} is not an {'https' if https else 'http(s)'} URL")
    return value


def parse_metadata(document: Any, *, issuer: str, https: bool) -> ProviderMetadata:
    """The discovery document's endpoints, refused unless it is the configured issuer's own."""
    if not isinstance(document, dict):
        raise ValueError("the discovery document is not a JSON object")
    # OpenID Connect Discovery 4.3: the issuer in the document must be exactly the one configured,
    # or a document served elsewhere could name another provider's endpoints.
    if document.get("issuer") != issuer:
        raise ValueError("the discovery document names another issuer than the one configured")
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise ValueError("the provider does not support PKCE with S256")
    endpoints = {
        name: _endpoint(document, name, required=required, https=https)
        for name, required in (
            ("authorization_endpoint", True),
            ("token_endpoint", True),
            ("jwks_uri", True),
            ("userinfo_endpoint", False),
            ("end_session_endpoint", False),
        )
    }
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=str(endpoints["authorization_endpoint"]),
        token_endpoint=str(endpoints["token_endpoint"]),
        jwks_uri=str(endpoints["jwks_uri"]),
        userinfo_endpoint=endpoints["userinfo_endpoint"],
        end_session_endpoint=endpoints["end_session_endpoint"],
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
    )


class OidcClient:
    """The web app as a client of one OpenID provider (one per app: `oidc_client(request)`)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            raise ValueError("OIDC sign-in needs OIDC_ISSUER and OIDC_CLIENT_ID")
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._client_secret = (
            settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        )
        self.scopes = tuple(dict.fromkeys(["openid", *settings.oidc_scopes]))
        self.algorithms = [a for a in settings.oidc_algorithms if a in ASYMMETRIC_ALGORITHMS]
        if not self.algorithms:
            raise ValueError("OIDC_ALGORITHMS names no asymmetric signature algorithm (such as RS256)")
        self.redirect_uri = f"{settings.public_base_url}/auth/callback"
        self.post_logout_redirect_uri = f"{settings.public_base_url}/signed-out"
        self.https_only = settings.is_production
        self.leeway = settings.jwt_leeway_seconds
        self.jwks_seconds = float(settings.jwks_cache_seconds)
        self.timeout = httpx.Timeout(settings.http_read_timeout, connect=settings.http_connect_timeout)
        self._metadata: tuple[ProviderMetadata, float] | None = None
        self._keys: tuple[KeySet, float] | None = None
        self._keys_forced_at = float("-inf")

    # --- the provider's documents ----------------------------------------------------------------

    async def _get_json(self, url: str, *, bearer: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        # A client per call: sign-ins are rare, and no connection outlives the event loop it was
        # made on.
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            response = await client.get(url, headers=headers)
            response.raise_for_status()
            return response.json()

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document (cached for an hour); 503 when it cannot be read."""
        now = time.monotonic()
        if self._metadata is not None and now - self._metadata[1] < METADATA_SECONDS:
            return self._metadata[0]
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            metadata = parse_metadata(await self._get_json(url), issuer=self.issuer, https=self.https_only)
        except (httpx.HTTPError, ValueError) as exc:
            # The error's type only: a message may quote what the provider sent.
            log.warning("oidc_discovery_failed", issuer=self.issuer, error=type(exc).__name__)
            if self._metadata is not None:
                # A provider briefly away does not stop sign-in with what we already know.
                return self._metadata[0]
            raise ServiceUnavailable(UNREACHABLE, code="oidc-provider-unreachable") from None
        self._metadata = (metadata, now)
        return metadata

    async def _key_set(self, *, force: bool = False) -> KeySet:
        now = time.monotonic()
        cached = self._keys
        if cached is not None:
            fresh = now - cached[1] < self.jwks_seconds
            may_force = now - self._keys_forced_at >= UNKNOWN_KID_REFRESH_SECONDS
            if (fresh and not force) or (force and not may_force):
                return cached[0]
        if force:
            self._keys_forced_at = now
        metadata = await self.metadata()
        try:
            document = await self._get_json(metadata.jwks_uri)
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise ValueError("the JWKS is not an object with a keys list")
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            log.warning("oidc_jwks_failed", issuer=self.issuer, error=type(exc).__name__)
            if cached is not None:
                return cached[0]
            raise ServiceUnavailable(UNREACHABLE, code="oidc-provider-unreachable") from None
        self._keys = (keys, now)
        return keys

    async def _decode(self, token: str) -> jwt.Token:
        """A JWT whose signature verifies with one of the provider's keys (claims not yet checked)."""
        if len(token.encode("utf-8", "ignore")) > MAX_TOKEN_BYTES:
            raise JoseError("the token is too large")
        try:
            return jwt.decode(token, await self._key_set(), algorithms=self.algorithms)
        except InvalidKeyIdError:
            return jwt.decode(token, await self._key_set(force=True), algorithms=self.algorithms)

    # --- the protocol --------------------------------------------------------------------------

    def _oauth(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            token_endpoint_auth_method="client_secret_basic" if self._client_secret else "none",
            scope=" ".join(self.scopes),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=self.timeout,
        )

    async def begin(self, next_path: str) -> AuthorizationRequest:
        """The authorization request: a fresh state (against forged callbacks), nonce (binds the
        ID token to this request) and PKCE code verifier (binds the code to this browser)."""
        metadata = await self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        # 86 characters of [A-Za-z0-9_-]: within RFC 7636's 43 to 128 unreserved characters.
        code_verifier = secrets.token_urlsafe(64)
        async with self._oauth() as client:
            url, _ = client.create_authorization_url(
                metadata.authorization_endpoint, state=state, code_verifier=code_verifier, nonce=nonce
            )
        pending = {
            "state": state,
            "nonce": nonce,
            "code_verifier": code_verifier,
            "next": next_path,
            "started_at": int(time.time()),
        }
        return AuthorizationRequest(url=str(url), pending=pending)

    async def exchange(self, code: str, code_verifier: str) -> dict[str, Any]:
        """The token response for an authorization code (the code verifier proves it is ours)."""
        metadata = await self.metadata()
        try:
            async with self._oauth() as client:
                token = await client.fetch_token(
                    metadata.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
        except OAuthError as exc:
            # The provider's error code only (invalid_grant: used, expired or not ours).
            log.info("oidc_code_refused", error=str(getattr(exc, "error", "oauth_error"))[:40])
            raise refused(
                "The NHS sign-in service did not accept this sign-in (it may have been used already "
                "or taken too long)",
                "oidc-code-refused",
            ) from None
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code >= 500:
                raise ServiceUnavailable(UNREACHABLE, code="oidc-provider-unreachable") from None
            raise refused(
                "The NHS sign-in service did not accept this sign-in", "oidc-code-refused"
            ) from None
        except httpx.HTTPError as exc:
            log.warning("oidc_token_endpoint_failed", error=type(exc).__name__)
            raise ServiceUnavailable(UNREACHABLE, code="oidc-provider-unreachable") from None
        except ValueError:
            raise refused(
                "The NHS sign-in service's answer could not be understood", "oidc-token-response-invalid"
            ) from None
        return dict(token)

    async def verify_id_token(
        self, id_token: str, *, nonce: str, access_token: str | None = None
    ) -> dict[str, Any]:
        """The ID token's claims, once its signature verifies with the provider's keys and it is
        from the provider, for this app (aud, azp), unexpired, issued for this request (nonce) and,
        when it carries at_hash, issued with this access token."""
        try:
            token = await self._decode(id_token)
        except (JoseError, ValueError):
            raise refused(
                "The sign-in could not be verified (its ID token's signature does not verify)",
                "oidc-id-token-signature",
            ) from None
        options = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": self.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        }
        params = {"nonce": nonce, "client_id": self.client_id, "access_token": access_token}
        claims = CodeIDToken(token.claims, token.header, options, params)
        try:
            claims.validate(leeway=self.leeway)
        except ClaimError as exc:
            # The claim's name is ours to say (exc.claim), its value is not.
            which = exc.claim if isinstance(exc.claim, str) else "a claim"
            code = "oidc-nonce-mismatch" if which == "nonce" else "oidc-id-token-claims"
            raise refused(
                f"The sign-in could not be verified (its ID token's {which} is not acceptable)", code
            ) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 200:
            raise refused(
                "The sign-in could not be verified (its subject is not usable)", "oidc-id-token-claims"
            )
        return dict(claims)

    async def granted_scopes(self, token: Mapping[str, Any]) -> frozenset[str]:
        """The scopes the provider granted, among those asked for: from the token response's
        `scope`, else from the `scope` claim of the access token when it is a JWT that verifies
        with the provider's keys. None found: no scope (RFC 6749 lets a provider leave `scope` out
        when it granted all it was asked; a role is never assumed)."""
        granted: list[str] = []
        scope = token.get("scope")
        if isinstance(scope, str):
            granted = scope.split()
        elif isinstance(scope, list):
            granted = [s for s in scope if isinstance(s, str)]
        else:
            access_token = token.get("access_token")
            if isinstance(access_token, str) and access_token.count(".") == 2:
                granted = await self._jwt_access_token_scopes(access_token)
        return frozenset(granted) & frozenset(self.scopes)

    async def _jwt_access_token_scopes(self, access_token: str) -> list[str]:
        try:
            token = await self._decode(access_token)
            claims = token.claims
            jwt.JWTClaimsRegistry(
                leeway=self.leeway, iss={"essential": True, "value": self.issuer}, exp={"essential": True}
            ).validate(claims)
        except (JoseError, ValueError):
            return []
        scope = claims.get("scope")
        if isinstance(scope, str):
            return scope.split()
        if isinstance(scope, list):
            return [s for s in scope if isinstance(s, str)]
        return []

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo endpoint's claims ({} when the provider has none)."""
        metadata = await self.metadata()
        if metadata.userinfo_endpoint is None:
            return {}
        try:
            found = await self._get_json(metadata.userinfo_endpoint, bearer=access_token)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code >= 500:
                raise ServiceUnavailable(UNREACHABLE, code="oidc-provider-unreachable") from None
            raise refused(
                "The NHS sign-in service refused to say who you are", "oidc-userinfo-refused"
            ) from None
        except httpx.HTTPError:
            raise ServiceUnavailable(UNREACHABLE, code="oidc-provider-unreachable") from None
        except ValueError:
            raise refused(
                "The NHS sign-in service's answer could not be understood", "oidc-userinfo-refused"
            ) from None
        return found if isinstance(found, dict) else {}

    async def complete(self, pending: Mapping[str, Any], code: str) -> VerifiedSignIn:
        """Exchanges the code of a pending sign-in and verifies what comes back."""
        token = await self.exchange(code, str(pending["code_verifier"]))
        id_token = token.get("id_token")
        access_token = token.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise refused("The NHS sign-in service did not say who you are (no ID token)", "oidc-no-id-token")
        claims = await self.verify_id_token(id_token, nonce=str(pending["nonce"]), access_token=access_token)
        sub = str(claims["sub"])
        # Claims the ID token does not carry (a provider may keep profile and org for userinfo);
        # userinfo must be about the same person (OpenID Connect Core 5.3.2).
        if ("org" not in claims or "name" not in claims) and access_token:
            info = await self.userinfo(access_token)
            if info:
                if not isinstance(info.get("sub"), str) or not secrets.compare_digest(
                    info["sub"].encode(), sub.encode()
                ):
                    raise refused(
                        "The NHS sign-in service's answers do not agree on who you are",
                        "oidc-userinfo-mismatch",
                    )
                claims = {**info, **claims}
        refresh_token = token.get("refresh_token")
        return VerifiedSignIn(
            sub=sub,
            claims=claims,
            scopes=await self.granted_scopes(token),
            tokens={
                "access_token": access_token,
                "id_token": id_token,
                "refresh_token": refresh_token if isinstance(refresh_token, str) else None,
            },
        )

    async def end_session_url(self, id_token: str | None) -> str | None:
        """Where to send the browser to sign out at the provider too (RP-initiated logout), None
        when the provider offers no end-session endpoint."""
        try:
            metadata = await self.metadata()
        except ServiceUnavailable:
            # Signing out here must not wait on the provider: the local session ends anyway.
            return None
        if metadata.end_session_endpoint is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": self.post_logout_redirect_uri}
        if id_token:
            params["id_token_hint"] = id_token
        separator = "&" if urlsplit(metadata.end_session_endpoint).query else "?"
        return f"{metadata.end_session_endpoint}{separator}{urlencode(params)}"


def oidc_client(request: Request) -> OidcClient:
    """The app's OIDC client, made on first use (so its discovery and key caches last as the app)."""
    client: OidcClient | None = getattr(request.app.state, "oidc_client", None)
    if client is None:
        client = OidcClient(request.app.state.settings)
        request.app.state.oidc_client = client
    return client
