"""Free values a caller sends, made safe to record.

A code, number, path segment or message that a caller typed may be an identifier put where a code
belongs (an NHS number as a provider code, a postcode as an invoice id). Such a value goes into an
audit event, a log line or an error detail only once it is known to be a code of the expected kind
(in the reference data, the caller's own organisation, a well-formed id of ours); anything else is
recorded as a keyed digest and a length, which lets an auditor see that two refusals carried the
same value without the log ever holding it.

The digest is keyed with a secret of the service (derived from its signing key when the service
starts), never a fixed key: ten-digit NHS numbers are few enough to hash them all."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Callable, Container
from typing import Any

from cef_common.logging import DATE_SHAPE, NHS_NUMBER_SHAPE, POSTCODE_SHAPE

_DIGEST_CONTEXT = b"cef-free-value-digest-v1"
# Until a service configures its key, a random one: digests then match only within this process.
_key: bytes = os.urandom(32)

# A value is what a caller sent; `Redacted` is what may be recorded in its place.
Redacted = dict[str, Any]


def configure(secret: bytes) -> None:
    """Keys every later digest with a key derived from `secret` (e.g. the service's private key)."""
    global _key
    _key = hmac.new(secret, _DIGEST_CONTEXT, hashlib.sha256).digest()


def digest(value: object) -> Redacted:
    """A keyed digest of `value` and its length: what is recorded in place of an unknown value."""
    text = value if isinstance(value, str) else repr(value)
    mac = hmac.new(_key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return {"digest": mac[:32], "length": len(text)}


def known_or_digest(value: object, known: Container[str] | Callable[[str], bool]) -> str | Redacted | None:
    """`value` itself when it is a string that `known` vouches for, else its digest (None stays None).

    `known` is a collection of the codes of the expected kind, or a predicate saying whether a
    string is one."""
    if value is None:
        return None
    if isinstance(value, str):
        ok = known(value) if callable(known) else value in known
        if ok:
            return value
    return digest(value)


def is_uuid(value: str) -> bool:
    """True for a canonical, lower-case UUID (the shape of every id this system issues)."""
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


_ASCII_DIGITS = re.compile(r"^[0-9]+$")


def is_ascii_digits(value: str, *, max_digits: int = 18) -> bool:
    """True for 1 to `max_digits` ASCII digits (str.isdigit() also accepts '¹' and other scripts)."""
    return 0 < len(value) <= max_digits and _ASCII_DIGITS.match(value) is not None


# Free text a caller writes (a reason, a purpose, an invoice number) that is kept or recorded as it
# is must hold no identifier: such text is refused, never masked, when one of these shapes is in it.
# The log mask's shapes (whole runs of letters and digits) and ten digits in a row anywhere.
_TEN_DIGITS = re.compile(r"(?<![0-9])[0-9]{10}(?![0-9])")


def identifiers_in(text: str) -> list[str]:
    """What in `text` is shaped like an identifier ("an NHS number", "a date", "a postcode"),
    empty when nothing is. Used to refuse free text, never to clean it."""
    found = []
    if NHS_NUMBER_SHAPE.search(text) or _TEN_DIGITS.search(text):
        found.append("an NHS number")
    if DATE_SHAPE.search(text):
        found.append("a date")
    if POSTCODE_SHAPE.search(text):
        found.append("a postcode")
    return found


_ANY_IDENTIFIER = re.compile(
    "|".join(f"(?:{shape.pattern})" for shape in (_TEN_DIGITS, NHS_NUMBER_SHAPE, DATE_SHAPE, POSTCODE_SHAPE))
)


def carries_identifier(text: str) -> bool:
    """True when `text` holds something shaped like an NHS number, a date or a full postcode (one
    search: cheap enough for every line of a large file)."""
    # Every shape needs five characters; digits alone make an identifier only as ten of them.
    if len(text) < 5 or (text.isdigit() and len(text) != 10):
        return False
    return _ANY_IDENTIFIER.search(text) is not None
