"""The fast canonical path produces exactly what the RFC 8785 reference does."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cef_audit.canonical import canonical_json

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_matches_the_reference(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\ue000": 1, "\U0001f600": 2, "a": 3},  # code point order and UTF-16 order differ here
        {"k": '\x00\x1f\x7f\u2028\ud7ff"\\/'},
        {"n": -(2**53) + 1, "f": 1e21, "g": 5e-324, "z": -0.0},
        [1, "2", [3, {"b": None, "a": True}]],
    ],
)
def test_edge_cases(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_numbers_without_an_exact_json_form_are_refused() -> None:
    with pytest.raises(ValueError, match="safe integer"):
        canonical_json({"n": 2**60})
