"""The tokeniser's cryptography: HMAC tokens, AES-GCM sealing of originals and wrapping of data keys.

A data key (256 random bits, one per kind, context and key version) never leaves this process
unwrapped. Two subkeys are derived from it with HKDF so that the token MAC and the encryption of
originals never share a key."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
# 144 bits of HMAC-SHA-256: collision-free in practice for any population, and 24 base64 characters.
TOKEN_MAC_BYTES = 18
TOKEN_BODY_CHARS = 24

KIND_LETTERS = {"nhs_number": "N", "date_of_birth": "D", "postcode": "P"}
LETTER_KINDS = {v: k for k, v in KIND_LETTERS.items()}

TOKEN_PATTERN = re.compile(r"^([NDP])([1-9][0-9]{0,8})\.([A-Za-z0-9_-]{24})$")

# Standard base64 to base64url, applied to bytes (faster than base64.urlsafe_b64encode per value).
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class KeyUnavailable(Exception):
    """A wrapped key cannot be opened with the configured master key (the message holds no key)."""


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def format_token(kind: str, version: int, mac: bytes) -> str:
    return f"{KIND_LETTERS[kind]}{version}." + binascii.b2a_base64(mac, newline=False).translate(
        _URLSAFE
    ).decode("ascii")


def parse_token(token: object) -> tuple[str, int] | None:
    """(kind, key_version) named by a well-formed token, else None."""
    if type(token) is not str or len(token) > 64:
        return None
    m = TOKEN_PATTERN.match(token)
    if m is None:
        return None
    return LETTER_KINDS[m.group(1)], int(m.group(2))


@dataclass(frozen=True, repr=False)
class DataKey:
    """The unwrapped material of one key version, ready to tokenise and to seal originals."""

    kind: str
    context: str
    version: int
    _inner: hashlib._Hash = field(compare=False)
    _outer: hashlib._Hash = field(compare=False)
    _aead: AESGCM = field(compare=False)
    prefix: str = ""

    @classmethod
    def from_bytes(cls, key: bytes, *, kind: str, context: str, version: int) -> DataKey:
        if len(key) != KEY_BYTES:
            raise KeyUnavailable(f"a data key must be {KEY_BYTES} bytes")
        mac_key = _hkdf(key, b"cef-tokeniser/token-hmac/v1")
        seal_key = _hkdf(key, b"cef-tokeniser/original-aead/v1")
        # HMAC (RFC 2104) with the keyed pad blocks hashed once: each token then costs two
        # compressions instead of four. Tests check the result equals hmac.new(...).
        block = mac_key.ljust(64, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        return cls(kind, context, version, inner, outer, AESGCM(seal_key), f"{KIND_LETTERS[kind]}{version}.")

    def __repr__(self) -> str:
        return f"DataKey(kind={self.kind!r}, context={self.context!r}, version={self.version})"

    def mac(self, value: str) -> bytes:
        inner = self._inner.copy()
        inner.update(value.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def tokens(self, values: list[str]) -> list[str]:
        """Tokens of distinct normalised values, in order; the loop is the service's hot path."""
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        b2a, table, prefix, n = binascii.b2a_base64, _URLSAFE, self.prefix, TOKEN_MAC_BYTES
        out: list[str] = []
        append = out.append
        for value in values:
            inner = inner_copy()
            inner.update(value.encode())
            outer = outer_copy()
            outer.update(inner.digest())
            append(prefix + b2a(outer.digest()[:n], newline=False).translate(table).decode())
        return out

    def token(self, value: str) -> str:
        return self.tokens([value])[0]

    def seal(self, value: str, token: str) -> bytes:
        """The original, encrypted and bound to its token (a sealed value moved to another token fails)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), token.encode())

    def seal_many(self, pairs: list[tuple[str, str]]) -> list[bytes]:
        """`seal` for many (token, value) pairs, with one call for all the random nonces."""
        nonces = os.urandom(NONCE_BYTES * len(pairs))
        encrypt = self._aead.encrypt
        out: list[bytes] = []
        for i, (token, value) in enumerate(pairs):
            nonce = nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
            out.append(nonce + encrypt(nonce, value.encode(), token.encode()))
        return out

    def open(self, sealed: bytes, token: str) -> str:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], token.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise KeyUnavailable("a stored original does not open with its key") from None


class MasterKey:
    """The key that wraps data keys; only its key id is ever shown."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the master key must be {KEY_BYTES} bytes (64 hex characters)")
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"cef-tokeniser/master-key-id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def from_hex(cls, text: str) -> MasterKey:
        cleaned = text.strip()
        if not re.fullmatch(r"[0-9a-fA-F]{64}", cleaned):
            raise ValueError("the master key must be 64 hexadecimal characters (256 bits)")
        return cls(bytes.fromhex(cleaned))

    @staticmethod
    def _aad(kind: str, context: str, version: int) -> bytes:
        return f"cef-tokeniser/data-key/{kind}/{context}/{version}".encode()

    def wrap(self, data_key: bytes, *, kind: str, context: str, version: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, self._aad(kind, context, version))

    def unwrap(self, wrapped: bytes, *, kind: str, context: str, version: int) -> bytes:
        try:
            return self._aead.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._aad(kind, context, version)
            )
        except (InvalidTag, ValueError):
            raise KeyUnavailable(
                f"the data key {kind}/{context}/v{version} does not open with master key {self.key_id}"
            ) from None


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)
