"""Bearer-token verification against the attacks a token verifier must refuse, and scope/org checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from cef_common.auth import MAX_TOKEN_BYTES, ServiceTokens, TokenSigner, TokenVerifier
from cef_common.errors import Forbidden, Unauthorized
from cef_common.keys import SigningKey, jwks_path_for, load_signing_key
from cef_common.settings import TrustedIssuer
from cef_common.testing import app_client

AUD = "common-test"
ISS = "idp"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j-1",
        "scope": "things:read",
        "org": "RTR",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def es256(key: SigningKey, payload: dict[str, Any], **header: Any) -> str:
    return str(jwt.encode(payload, key.private_pem, algorithm="ES256", headers={"kid": key.kid, **header}))


class RsaKey:
    """An RSA key published as a JWK, for issuers that sign RS256."""

    def __init__(self, kid: str = "rsa-1") -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid
        self.pem = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        numbers = self.private.public_key().public_numbers()
        self.jwk = {
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes(3, "big")),
        }

    def sign(self, payload: dict[str, Any]) -> str:
        return str(jwt.encode(payload, self.pem, algorithm="RS256", headers={"kid": self.kid}))


def write_jwks(path: Path, *jwks: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(jwks)}))
    return path


@pytest.fixture
def idp_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def idp_jwks(tmp_path: Path, idp_key: SigningKey) -> Path:
    return write_jwks(tmp_path / "idp.jwks.json", idp_key.public_jwk)


@pytest.fixture
def verifier(idp_jwks: Path) -> TokenVerifier:
    return TokenVerifier(audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_file=idp_jwks)], leeway=30)


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(token)
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
    return info.value.detail


# --- what a good token gives ------------------------------------------------------------------------


def test_a_valid_token_gives_the_principal(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    principal = verifier.verify(es256(idp_key, claims(scope="things:read things:write", client_id="portal")))
    assert principal.sub == "alice"
    assert principal.org == "RTR"
    assert principal.issuer == ISS
    assert principal.client == "portal"
    assert principal.token_id == "j-1"
    assert principal.scopes == frozenset({"things:read", "things:write"})


def test_an_audience_list_naming_this_service_is_accepted(
    verifier: TokenVerifier, idp_key: SigningKey
) -> None:
    assert verifier.verify(es256(idp_key, claims(aud=["other", AUD]))).sub == "alice"


# --- malformed and unsigned ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.e30", "Bearer x", "\u00e9\u00e9.\u00e9.\u00e9"],
)
def test_garbage_is_refused(verifier: TokenVerifier, token: str) -> None:
    assert "well-formed" in refused(verifier, token)


def test_a_header_that_is_not_an_object_is_refused(verifier: TokenVerifier) -> None:
    token = b64url_json(["ES256"]) + "." + b64url_json(claims()) + "." + b64url(b"sig")
    refused(verifier, token)


def test_claims_that_are_not_an_object_are_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    token = b64url_json({"alg": "ES256", "kid": idp_key.kid}) + "." + b64url(b"[1,2]") + "." + b64url(b"sig")
    refused(verifier, token)


@pytest.mark.parametrize("alg", [["ES256"], {"name": "ES256"}, None, 256])
def test_an_alg_that_is_not_a_string_is_refused(
    verifier: TokenVerifier, idp_key: SigningKey, alg: Any
) -> None:
    token = b64url_json({"alg": alg, "kid": idp_key.kid}) + "." + b64url_json(claims()) + "." + b64url(b"sig")
    assert "not accepted" in refused(verifier, token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(verifier: TokenVerifier, idp_key: SigningKey, alg: str) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": idp_key.kid}
    for signature in ("", b64url(b"anything")):
        token = (
            b64url_json(header)
            + "."
            + b64url_json(claims(scope="things:read things:write"))
            + "."
            + signature
        )
        assert "not accepted" in refused(verifier, token)


def test_hs256_signed_with_the_issuers_public_key_is_refused(
    verifier: TokenVerifier, idp_key: SigningKey, idp_jwks: Path
) -> None:
    """Key confusion: a verifier that lets the token pick the algorithm would check this HMAC
    with the public key as the secret, and anyone can read the public key."""
    public_pem = (
        serialization.load_pem_private_key(idp_key.private_pem.encode(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (public_pem, idp_jwks.read_bytes(), json.dumps(idp_key.public_jwk).encode()):
        signing_input = (
            b64url_json({"alg": "HS256", "typ": "JWT", "kid": idp_key.kid}) + "." + b64url_json(claims())
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert "not accepted" in refused(verifier, signing_input + "." + b64url(mac))


@pytest.mark.parametrize("alg", ["HS256", "HS512", "ES384", "PS256", "RS512", "EdDSA"])
def test_only_es256_and_rs256_are_accepted(verifier: TokenVerifier, idp_key: SigningKey, alg: str) -> None:
    token = b64url_json({"alg": alg, "kid": idp_key.kid}) + "." + b64url_json(claims()) + "." + b64url(b"s")
    assert "not accepted" in refused(verifier, token)


# --- signatures -------------------------------------------------------------------------------------


def test_a_bad_signature_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    header, payload, signature = es256(idp_key, claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[5] ^= 0x01
    assert "signature" in refused(verifier, f"{header}.{payload}.{b64url(bytes(raw))}")


def test_a_signature_by_another_key_under_the_issuers_kid_is_refused(
    verifier: TokenVerifier, idp_key: SigningKey, stranger_key: SigningKey
) -> None:
    token = str(
        jwt.encode(claims(), stranger_key.private_pem, algorithm="ES256", headers={"kid": idp_key.kid})
    )
    assert "signature" in refused(verifier, token)


def test_elevated_scope_with_the_old_signature_is_refused(
    verifier: TokenVerifier, idp_key: SigningKey
) -> None:
    header, _, signature = es256(idp_key, claims(scope="things:read")).split(".")
    elevated = b64url_json(claims(scope="things:read things:write admin"))
    assert "signature" in refused(verifier, f"{header}.{elevated}.{signature}")


def test_other_organisation_with_the_old_signature_is_refused(
    verifier: TokenVerifier, idp_key: SigningKey
) -> None:
    header, _, signature = es256(idp_key, claims(org="RTR")).split(".")
    assert "signature" in refused(verifier, f"{header}.{b64url_json(claims(org='RXX'))}.{signature}")


def test_a_key_embedded_in_the_header_is_not_trusted(
    verifier: TokenVerifier, stranger_key: SigningKey
) -> None:
    token = es256(stranger_key, claims(), jwk=stranger_key.public_jwk, jku="https://attacker.invalid/jwks")
    assert "not known" in refused(verifier, token)


def test_a_token_without_a_kid_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    token = str(jwt.encode(claims(), idp_key.private_pem, algorithm="ES256"))
    assert "kid" in refused(verifier, token)


def test_an_unknown_kid_is_refused(verifier: TokenVerifier, stranger_key: SigningKey) -> None:
    assert "not known" in refused(verifier, es256(stranger_key, claims()))


# --- time -------------------------------------------------------------------------------------------


def test_an_expired_token_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    now = int(time.time())
    token = es256(idp_key, claims(iat=now - 600, nbf=now - 600, exp=now - 60))
    assert "expired" in refused(verifier, token)


def test_expiry_within_the_leeway_is_accepted(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    now = int(time.time())
    assert verifier.verify(es256(idp_key, claims(iat=now - 600, nbf=now - 600, exp=now - 5))).sub == "alice"


def test_iat_in_the_future_beyond_the_leeway_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    now = int(time.time())
    token = es256(idp_key, claims(iat=now + 600, nbf=None, exp=now + 900))
    assert "not yet valid" in refused(verifier, token)


def test_iat_in_the_future_within_the_leeway_is_accepted(
    verifier: TokenVerifier, idp_key: SigningKey
) -> None:
    now = int(time.time())
    assert verifier.verify(es256(idp_key, claims(iat=now + 10, nbf=None))).sub == "alice"


def test_nbf_in_the_future_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    now = int(time.time())
    refused(verifier, es256(idp_key, claims(iat=now, nbf=now + 600)))


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "aud"])
def test_a_token_missing_a_registered_claim_is_refused_naming_the_claim(
    verifier: TokenVerifier, idp_key: SigningKey, missing: str
) -> None:
    payload = claims()
    del payload[missing]
    with pytest.raises(Unauthorized) as info:
        verifier.verify(es256(idp_key, payload))
    # Not "the signature does not verify": the signature is fine, the claim is missing.
    assert f"the token has no '{missing}' claim" in info.value.detail
    assert info.value.reason == f"missing-claim-{missing}"
    # The signature verified, so the refusal may name the caller its claims give.
    assert info.value.verified_claims is not None
    assert info.value.verified_claims.get("org") == "RTR"


def test_a_token_without_iss_is_refused_as_untrusted(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    payload = claims()
    del payload["iss"]
    assert "issuer" in refused(verifier, es256(idp_key, payload))


def test_a_forged_token_names_no_caller(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    token = es256(idp_key, claims())
    header, payload, signature = token.split(".")
    forged = f"{header}.{b64url_json(claims(sub='mallory'))}.{signature}"
    with pytest.raises(Unauthorized) as info:
        verifier.verify(forged)
    assert (info.value.reason, info.value.verified_claims) == ("bad-signature", None)


def test_a_non_numeric_iat_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    refused(verifier, es256(idp_key, claims(iat="yesterday")))


# --- audience and issuer ---------------------------------------------------------------------------


def test_a_token_for_another_audience_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(es256(idp_key, claims(aud="tokeniser")))
    assert "not addressed to this service" in info.value.detail
    assert info.value.reason == "wrong-audience"
    assert (info.value.verified_claims or {}).get("sub") == "alice"


def test_an_untrusted_issuer_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    assert "issuer" in refused(verifier, es256(idp_key, claims(iss="https://elsewhere.invalid")))


def test_one_issuer_cannot_sign_for_another(tmp_path: Path, idp_key: SigningKey) -> None:
    """Both issuers are trusted; a token naming `peer` but signed with the idp's key is not."""
    peer_key = SigningKey.generate()
    v = TokenVerifier(
        audience=AUD,
        issuers=[
            TrustedIssuer(issuer=ISS, jwks_file=write_jwks(tmp_path / "a.json", idp_key.public_jwk)),
            TrustedIssuer(issuer="peer", jwks_file=write_jwks(tmp_path / "b.json", peer_key.public_jwk)),
        ],
    )
    assert v.verify(es256(peer_key, claims(iss="peer"))).issuer == "peer"
    assert "not known" in refused(v, es256(idp_key, claims(iss="peer")))


def test_an_issuer_claim_that_is_not_a_string_is_refused(
    verifier: TokenVerifier, idp_key: SigningKey
) -> None:
    assert "issuer" in refused(verifier, es256(idp_key, claims(iss=[ISS])))


# --- size -------------------------------------------------------------------------------------------


def test_a_token_over_8_kib_is_refused(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    token = es256(idp_key, claims(padding="x" * MAX_TOKEN_BYTES))
    assert len(token) > MAX_TOKEN_BYTES
    assert "8 KiB" in refused(verifier, token)


def test_a_token_just_under_8_kib_is_accepted(verifier: TokenVerifier, idp_key: SigningKey) -> None:
    token = es256(idp_key, claims(padding="x" * 5000))
    assert len(token) <= MAX_TOKEN_BYTES
    assert verifier.verify(token).sub == "alice"


# --- RS256 --------------------------------------------------------------------------------------------


def test_rs256_is_accepted_for_an_issuer_configured_for_it(tmp_path: Path) -> None:
    key = RsaKey()
    v = TokenVerifier(
        audience=AUD,
        issuers=[
            TrustedIssuer(
                issuer=ISS, jwks_file=write_jwks(tmp_path / "j.json", key.jwk), algorithms=["RS256"]
            )
        ],
    )
    assert v.verify(key.sign(claims())).sub == "alice"


def test_rs256_is_refused_for_an_issuer_not_configured_for_it(tmp_path: Path) -> None:
    key = RsaKey()
    v = TokenVerifier(
        audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_file=write_jwks(tmp_path / "j.json", key.jwk))]
    )
    assert "may not sign with RS256" in refused(v, key.sign(claims()))


def test_es256_is_refused_for_an_rs256_only_issuer(tmp_path: Path, idp_key: SigningKey) -> None:
    v = TokenVerifier(
        audience=AUD,
        issuers=[
            TrustedIssuer(
                issuer=ISS,
                jwks_file=write_jwks(tmp_path / "j.json", idp_key.public_jwk),
                algorithms=["RS256"],
            )
        ],
    )
    assert "may not sign with ES256" in refused(v, es256(idp_key, claims()))


def test_an_alg_that_does_not_match_the_key_type_is_refused(tmp_path: Path, idp_key: SigningKey) -> None:
    """An RS256 header naming an EC key: the key decides what verifies it, not the token."""
    rsa_key = RsaKey(kid=idp_key.kid)
    v = TokenVerifier(
        audience=AUD,
        issuers=[
            TrustedIssuer(
                issuer=ISS,
                jwks_file=write_jwks(tmp_path / "j.json", idp_key.public_jwk),
                algorithms=["ES256", "RS256"],
            )
        ],
    )
    assert "does not match" in refused(v, rsa_key.sign(claims()))


# --- scopes an issuer may grant ---------------------------------------------------------------------


def test_an_issuers_allowed_scopes_filter_what_its_tokens_grant(tmp_path: Path, idp_key: SigningKey) -> None:
    v = TokenVerifier(
        audience=AUD,
        issuers=[
            TrustedIssuer(
                issuer="cef-api",
                jwks_file=write_jwks(tmp_path / "j.json", idp_key.public_jwk),
                allowed_scopes=["audit:write"],
            )
        ],
    )
    principal = v.verify(es256(idp_key, claims(iss="cef-api", scope="audit:write audit:read detokenise")))
    assert principal.scopes == frozenset({"audit:write"})


def test_an_empty_allowed_scopes_list_grants_nothing(tmp_path: Path, idp_key: SigningKey) -> None:
    v = TokenVerifier(
        audience=AUD,
        issuers=[
            TrustedIssuer(
                issuer="audit",
                jwks_file=write_jwks(tmp_path / "j.json", idp_key.public_jwk),
                allowed_scopes=[],
            )
        ],
    )
    assert v.verify(es256(idp_key, claims(iss="audit", scope="audit:write"))).scopes == frozenset()


# --- key rotation -----------------------------------------------------------------------------------


def test_a_rotated_jwks_file_is_picked_up_on_an_unknown_kid(
    tmp_path: Path, verifier: TokenVerifier, idp_key: SigningKey, idp_jwks: Path
) -> None:
    assert verifier.verify(es256(idp_key, claims())).sub == "alice"  # the JWKS is now cached
    new_key = SigningKey.generate()
    write_jwks(idp_jwks, new_key.public_jwk, idp_key.public_jwk)
    assert verifier.verify(es256(new_key, claims(sub="bob"))).sub == "bob"
    assert verifier.verify(es256(idp_key, claims(sub="carol"))).sub == "carol"


def test_a_key_removed_from_the_jwks_stops_verifying_after_the_cache_expires(
    idp_key: SigningKey, idp_jwks: Path
) -> None:
    v = TokenVerifier(audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_file=idp_jwks)], jwks_ttl=0)
    assert v.verify(es256(idp_key, claims())).sub == "alice"
    write_jwks(idp_jwks, SigningKey.generate().public_jwk)
    assert "not known" in refused(v, es256(idp_key, claims()))


def test_a_jwks_url_is_fetched_and_refreshed_on_an_unknown_kid(idp_key: SigningKey) -> None:
    published: dict[str, Any] = {"keys": [idp_key.public_jwk]}
    fetched: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        return json.loads(json.dumps(published))

    url = "https://idp.invalid/.well-known/jwks.json"
    v = TokenVerifier(audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_url=url)], fetch=fetch)
    assert v.verify(es256(idp_key, claims())).sub == "alice"
    assert v.verify(es256(idp_key, claims())).sub == "alice"
    assert fetched == [url]  # cached
    rotated = SigningKey.generate()
    published["keys"] = [rotated.public_jwk]
    assert v.verify(es256(rotated, claims(sub="bob"))).sub == "bob"
    assert fetched == [url, url]


def test_an_unreachable_jwks_refuses_tokens_without_crashing(tmp_path: Path, idp_key: SigningKey) -> None:
    v = TokenVerifier(
        audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_file=tmp_path / "does-not-exist.json")]
    )
    assert "not known" in refused(v, es256(idp_key, claims()))


@pytest.mark.parametrize(
    "content", ["[]", "not json", '{"keys": "nope"}', '{"keys": [1, "x", {"kty": "EC"}]}']
)
def test_a_malformed_jwks_refuses_tokens_without_crashing(
    tmp_path: Path, idp_key: SigningKey, content: str
) -> None:
    path = tmp_path / "j.json"
    path.write_text(content)
    v = TokenVerifier(audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_file=path)])
    assert "not known" in refused(v, es256(idp_key, claims()))


def test_an_issuer_outage_is_not_fetched_on_every_request(idp_key: SigningKey) -> None:
    calls: list[str] = []

    def down(url: str) -> dict[str, Any]:
        calls.append(url)
        raise httpx.ConnectError("connection refused")

    v = TokenVerifier(
        audience=AUD, issuers=[TrustedIssuer(issuer=ISS, jwks_url="https://idp/jwks")], fetch=down
    )
    for _ in range(5):
        assert "not known" in refused(v, es256(idp_key, claims()))
    assert len(calls) == 1


def test_keys_in_hand_serve_while_the_issuer_is_down(idp_key: SigningKey) -> None:
    answers: list[Any] = [{"keys": [idp_key.public_jwk]}, httpx.ConnectError("down")]
    calls: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        calls.append(url)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    v = TokenVerifier(
        audience=AUD,
        issuers=[TrustedIssuer(issuer=ISS, jwks_url="https://idp/jwks")],
        jwks_ttl=0,
        fetch=fetch,
    )
    for _ in range(4):
        assert v.verify(es256(idp_key, claims())).sub == "alice"
    assert len(calls) == 2  # loaded, failed once to refresh, then backed off


# --- this service's own tokens ------------------------------------------------------------------------


def test_service_tokens_verify_at_the_peer_and_are_short_lived(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "cef-api.pem"
    tokens = ServiceTokens(TokenSigner(load_signing_key(key_path, create=True), "cef-api"), "cef-api", 3600)
    peer = TokenVerifier(
        audience="audit",
        issuers=[
            TrustedIssuer(issuer="cef-api", jwks_file=jwks_path_for(key_path), allowed_scopes=["audit:write"])
        ],
    )
    token = tokens.token_for("audit", ["audit:write"])
    assert tokens.token_for("audit", ["audit:write"]) == token  # cached
    principal = peer.verify(token)
    assert (principal.sub, principal.client, principal.scopes) == (
        "cef-api",
        "cef-api",
        frozenset({"audit:write"}),
    )
    claims_ = jwt.get_unverified_claims(token)
    assert claims_["exp"] - claims_["iat"] <= 300
    refused(TokenVerifier(audience="tokeniser", issuers=peer._issuers.values()), token)


def test_a_signing_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "svc.pem"
    key = load_signing_key(path, create=True)
    assert path.stat().st_mode & 0o077 == 0
    assert load_signing_key(path, create=False).kid == key.kid
    assert json.loads(jwks_path_for(path).read_text()) == {"keys": [key.public_jwk]}
    assert "BEGIN" not in jwks_path_for(path).read_text()
    with pytest.raises(FileNotFoundError):
        load_signing_key(tmp_path / "keys" / "absent.pem", create=False)


# --- over HTTP: 401/403 as problem+json ----------------------------------------------------------------


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    assert body["type"].endswith(body["code"])
    return body


def assert_401(response: Any) -> dict[str, Any]:
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


async def test_http_no_token_is_401(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        body = assert_401(await client.get("/v1/whoami"))
        assert "Authorization: Bearer" in body["detail"]
        assert_401(await client.get("/v1/whoami", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}))
        assert_401(await client.get("/v1/whoami", headers={"Authorization": "Bearer "}))


async def test_http_attacks_are_401(make_app: Any, dev_issuer: Any, stranger_key: SigningKey) -> None:
    good = dev_issuer.token("things:read", aud=AUD, org="RTR")
    header, payload, signature = good.split(".")
    forged_payload = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload["scope"] = "things:read things:write"
    attacks = {
        "garbage": "not-a-jwt",
        "alg none": b64url_json({"alg": "none", "kid": dev_issuer.signer.key.kid}) + "." + payload + ".",
        "tampered": f"{header}.{b64url_json(forged_payload)}.{signature}",
        "stranger": es256(stranger_key, claims(iss="cef-dev")),
        "wrong audience": dev_issuer.token("things:read", aud="tokeniser"),
        "expired": dev_issuer.token("things:read", aud=AUD, ttl=-120),
        "too big": dev_issuer.token("things:read", aud=AUD, extra={"pad": "x" * MAX_TOKEN_BYTES}),
    }
    async with app_client(make_app()) as client:
        assert (
            await client.get("/v1/whoami", headers={"Authorization": f"Bearer {good}"})
        ).status_code == 200
        for name, token in attacks.items():
            response = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, name
            assert_401(response)
            assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_http_missing_scope_is_403(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.post(
            "/v1/widgets", json={"name": "w"}, headers=dev_issuer.headers("things:read", aud=AUD)
        )
        body = assert_problem(response, 403)
        assert body["code"] == "insufficient-scope"
        assert "things:write" in body["detail"]
        assert "www-authenticate" not in response.headers


async def test_http_other_organisation_is_403(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        headers = dev_issuer.headers("things:read", aud=AUD, org="RTR")
        assert (await client.get("/v1/orgs/RTR/things", headers=headers)).status_code == 200
        assert (await client.get("/v1/orgs/rtr/things", headers=headers)).status_code == 200
        body = assert_problem(await client.get("/v1/orgs/RXX/things", headers=headers), 403)
        assert body["code"] == "other-organisation"
        no_org = dev_issuer.headers("things:read", aud=AUD)
        assert_problem(await client.get("/v1/orgs/RTR/things", headers=no_org), 403)


async def test_http_principal_reaches_the_route(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.get(
            "/v1/whoami", headers=dev_issuer.headers("things:read extra", aud=AUD, org="RTR", sub="bob")
        )
        assert response.json() == {
            "sub": "bob",
            "org": "RTR",
            "issuer": "cef-dev",
            "client": "tests",
            "scopes": ["extra", "things:read"],
        }


async def test_http_operations_endpoints_need_no_token(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        for path in ("/healthz", "/readyz", "/.well-known/jwks.json", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path


def test_ensure_org_directly() -> None:
    from cef_common.auth import Principal, ensure_org

    p = Principal(sub="a", issuer="i", scopes=frozenset(), org="RTR")
    ensure_org(p, "rtr")
    with pytest.raises(Forbidden):
        ensure_org(p, "RXX")
    with pytest.raises(Forbidden):
        ensure_org(Principal(sub="a", issuer="i", scopes=frozenset()), "RTR")
