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
import unicodedata
import uuid
from collections.abc import Callable, Container
from typing import Any, Final

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


# What free text a person writes must not hold: anything that could be the patient's NHS number,
# a date (of birth, or any other: a date is half an identity), or a postcode. Such text is audited
# and stored as it is, so an identifier in it would be an identifier in the clear. The shared check
# (`cef_common.redact.identifiers_in`) finds the common spellings; these are the others a person
# writes in a sentence: digits grouped otherwise, dates run together or with a month's name.
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_MORE_IDENTIFIER_SHAPES: Final = (
    # Ten digits, in any grouping by single spaces, dots or hyphens.
    ("an NHS number", re.compile(r"(?<![0-9])(?:[0-9][\s.-]?){9}[0-9](?![0-9])")),
    ("a date", re.compile(r"(?<![0-9])[0-9]{4}[/.-][0-9]{1,2}[/.-][0-9]{1,2}(?![0-9])")),
    ("a date", re.compile(r"(?<![0-9])[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}(?![0-9])")),
    (
        "a date",
        re.compile(
            r"(?<![0-9])(?:(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
            r"|(?:0[1-9]|[12][0-9]|3[01])(?:0[1-9]|1[0-2])(?:19|20)[0-9]{2})(?![0-9])"
        ),
    ),
    (
        "a date",
        re.compile(
            rf"(?<![0-9])[0-9]{{1,2}}(?:st|nd|rd|th)?[\s.,/-]*{_MONTH}[\s.,/-]*[0-9]{{2,4}}(?![0-9])"
            rf"|\b{_MONTH}\s*[0-9]{{1,2}}(?:st|nd|rd|th)?,?\s*[0-9]{{4}}(?![0-9])",
            re.IGNORECASE,
        ),
    ),
    (
        "a postcode",
        re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{1,2}[0-9][A-Za-z0-9]?\s*[0-9][A-Za-z]{2}(?![A-Za-z0-9])"),
    ),
)

# Anything but a letter or a digit between two digits: how digits are grouped by hand ("943  476
# 5919", "943/476/5919", "943_476_5919").
_BETWEEN_DIGITS = re.compile(r"(?<=[0-9])[^0-9A-Za-z]+(?=[0-9])")
_TEN_DIGITS_JOINED = re.compile(r"(?<![0-9])[0-9]{10}(?![0-9])")
_LOOSE_DATE = re.compile(
    r"(?<![0-9])[0-9]{1,2}[^0-9A-Za-z]+[0-9]{1,2}[^0-9A-Za-z]+(?:19|20)[0-9]{2}(?![0-9])"
)
_LOOSE_POSTCODE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{1,2}[0-9][A-Za-z0-9]?[^A-Za-z0-9]{0,3}[0-9][A-Za-z]{2}(?![A-Za-z0-9])"
)


def identifiers_in_free_text(text: str) -> list[str]:
    """What in free text a person wrote (a reason, a message) looks like an identifier, empty when
    nothing does: stricter than `identifiers_in`, for text that is kept and audited as it is. The
    text is read as NFKC first, so full-width or other compatibility digits are digits."""
    text = unicodedata.normalize("NFKC", text)
    found = set(identifiers_in(text))
    found.update(what for what, shape in _MORE_IDENTIFIER_SHAPES if shape.search(text))
    if _TEN_DIGITS_JOINED.search(_BETWEEN_DIGITS.sub("", text)):
        found.add("an NHS number")
    if _LOOSE_DATE.search(text):
        found.add("a date")
    if _LOOSE_POSTCODE.search(text):
        found.add("a postcode")
    return sorted(found)
