"""The tokeniser's cryptography: token MACs, token format, sealing originals, wrapping data keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cef_tokeniser.crypto import (
    TOKEN_MAC_BYTES,
    DataKey,
    KeyUnavailable,
    MasterKey,
    format_token,
    parse_token,
)


def _key(kind: str = "nhs_number", context: str = "cef", version: int = 1) -> tuple[bytes, DataKey]:
    raw = secrets.token_bytes(32)
    return raw, DataKey.from_bytes(raw, kind=kind, context=context, version=version)


def test_mac_is_hmac_sha256_under_a_subkey_of_the_data_key() -> None:
    raw, key = _key()
    mac_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"cef-tokeniser/token-hmac/v1"
    ).derive(raw)
    for value in ["9434765919", "", "x" * 200, "TS18 1HU"]:
        assert key.mac(value) == hmac.new(mac_key, value.encode(), hashlib.sha256).digest()


def test_tokens_name_kind_and_version_and_keep_at_least_128_bits() -> None:
    _, key = _key("postcode", version=12)
    tokens = key.tokens(["TS18 1HU", "LS1 4AP"])
    for token, value in zip(tokens, ["TS18 1HU", "LS1 4AP"], strict=True):
        assert token == format_token("postcode", 12, key.mac(value)[:TOKEN_MAC_BYTES])
        assert token.startswith("P12.")
        assert token.isascii()
        assert len(token) <= 64
        assert TOKEN_MAC_BYTES * 8 >= 128
        assert parse_token(token) == ("postcode", 12)
    assert tokens[0] != tokens[1]
    assert key.token("TS18 1HU") == tokens[0]


def test_two_data_keys_give_unrelated_tokens() -> None:
    _, a = _key()
    _, b = _key()
    assert a.token("9434765919") != b.token("9434765919")


@pytest.mark.parametrize(
    "token",
    [
        None,
        5,
        "",
        "N1",
        "N0.AAAAAAAAAAAAAAAAAAAAAAAA",
        "X1.AAAAAAAAAAAAAAAAAAAAAAAA",
        "N1.AAAA",
        "N1.AAAAAAAAAAAAAAAAAAAAAAA=",
        "n1.AAAAAAAAAAAAAAAAAAAAAAAA",
        "N1.AAAAAAAAAAAAAAAAAAAAAAAA ",
        "N1234567890.AAAAAAAAAAAAAAAAAAAAAAAA",
        "N" + "1" * 70,
    ],
)
def test_malformed_tokens_do_not_parse(token: object) -> None:
    assert parse_token(token) is None


def test_sealed_original_opens_only_with_its_token_and_key() -> None:
    _, key = _key()
    _, other = _key()
    token = key.token("9434765919")
    sealed = key.seal("9434765919", token)
    assert b"9434765919" not in sealed
    assert key.open(sealed, token) == "9434765919"
    # Same value sealed twice: different ciphertexts (random nonce), so equal values do not show.
    assert key.seal("9434765919", token) != sealed
    with pytest.raises(KeyUnavailable):
        key.open(sealed, key.token("9999083013"))
    with pytest.raises(KeyUnavailable):
        other.open(sealed, token)
    many = key.seal_many([(token, "9434765919"), (key.token("9999083013"), "9999083013")])
    assert key.open(many[0], token) == "9434765919"
    assert key.open(many[1], key.token("9999083013")) == "9999083013"
    assert many[0][:12] != many[1][:12]
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(KeyUnavailable):
        key.open(bytes(tampered), token)


def test_master_key_wraps_data_keys_bound_to_their_kind_context_and_version() -> None:
    master = MasterKey(secrets.token_bytes(32))
    data_key = secrets.token_bytes(32)
    wrapped = master.wrap(data_key, kind="nhs_number", context="cef", version=1)
    assert data_key not in wrapped
    assert master.unwrap(wrapped, kind="nhs_number", context="cef", version=1) == data_key
    for moved in [("postcode", "cef", 1), ("nhs_number", "research", 1), ("nhs_number", "cef", 2)]:
        with pytest.raises(KeyUnavailable):
            master.unwrap(wrapped, kind=moved[0], context=moved[1], version=moved[2])
    with pytest.raises(KeyUnavailable) as err:
        MasterKey(secrets.token_bytes(32)).unwrap(wrapped, kind="nhs_number", context="cef", version=1)
    assert data_key.hex() not in str(err.value)


def test_master_key_shows_only_its_id() -> None:
    raw = secrets.token_bytes(32)
    master = MasterKey.from_hex(raw.hex() + "\n")
    assert raw.hex() not in repr(master)
    assert master.key_id == MasterKey(raw).key_id
    assert len(master.key_id) == 16
    assert MasterKey(secrets.token_bytes(32)).key_id != master.key_id
    _, key = _key()
    assert "nhs_number" in repr(key)
    assert "_inner" not in repr(key)


@pytest.mark.parametrize("text", ["", "abc", "zz" * 32, "00" * 31, "00" * 33])
def test_master_key_must_be_256_bits_of_hex(text: str) -> None:
    with pytest.raises(ValueError, match="64 hexadecimal"):
        MasterKey.from_hex(text)
