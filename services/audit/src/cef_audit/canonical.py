"""RFC 8785 (JCS) canonical JSON: a fast exact path for the values audit events hold, else the reference.

JCS sorts object keys by UTF-16 code units, writes no whitespace, escapes strings as ECMAScript's
JSON.stringify does and writes numbers in ECMAScript's shortest form. orjson with sorted keys
produces exactly those bytes when every number is an integer within ±(2**53 - 1) and no object key
holds a character at or above U+E000 (beyond which code point order and UTF-16 order differ);
anything else (floats, exotic keys) goes through the `rfc8785` reference implementation."""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

_MAX_SAFE_INTEGER = 2**53 - 1


def fast_path_exact(value: Any) -> bool:
    """Whether orjson with sorted keys writes exactly the RFC 8785 bytes of `value`."""
    kind = type(value)
    if kind is dict:
        # Flat objects of strings and small integers (every audit `detail` seen so far) are checked
        # in this one loop; nested values recurse.
        for k, v in value.items():
            if type(k) is not str or not (k.isascii() or max(k) < "\ue000"):
                return False
            vkind = type(v)
            if vkind is str or v is None or vkind is bool:
                continue
            if vkind is int:
                if not -_MAX_SAFE_INTEGER <= v <= _MAX_SAFE_INTEGER:
                    return False
            elif not fast_path_exact(v):
                return False
        return True
    if value is None or value is True or value is False or kind is str:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER)
    if kind is list:
        return all(fast_path_exact(v) for v in value)
    return False


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 serialisation of a JSON value (dict, list, str, int, float, bool, None)."""
    if fast_path_exact(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return bytes(rfc8785.dumps(value))
