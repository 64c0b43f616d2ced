"""The outward code (postcode district) of a postcode, by the spec's rule."""

from __future__ import annotations


def outward_code(postcode: str | None) -> str | None:
    """Strip all whitespace and upper-case; 5 to 7 characters minus the last 3 is the outward code.

    `ts181hu` → `TS18`; anything shorter or longer (or missing) has none. The rule is deliberately
    this simple: the district map decides whether the outward code means anything.
    """
    compact = compact_postcode(postcode)
    return compact[:-3] if compact is not None else None


def compact_postcode(postcode: str | None) -> str | None:
    """The postcode without whitespace, upper-cased, when it has 5 to 7 characters (else None): one
    spelling per postcode, which is what the line's postcode is tokenised as."""
    if postcode is None:
        return None
    compact = postcode.replace(" ", "")
    if not compact.isalnum():  # other whitespace (tabs, no-break spaces) is rare: the general path
        compact = "".join(compact.split())
    compact = compact.upper()
    if 5 <= len(compact) <= 7:
        return compact
    return None
