"""The reason catalogue: one entry for every code the engine can give, with the engine's outcome,
in plain words, and nothing in it that a line could not carry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import cef_api.validation
from cef_api.invoices.models import InvoiceLine
from cef_api.reasons.catalogue import CATALOGUE, ENTRIES, explain, explain_lines
from cef_api.validation.rules.outcome import QUERYING, REJECTING, outcome_for
from cef_api.validation.types import Outcome, Reason

VALIDATION = Path(cef_api.validation.__file__).parent


def _codes_the_engine_names() -> set[str]:
    """Every `Reason.X` the validation package's source mentions (the rules that give them)."""
    found: set[str] = set()
    for path in VALIDATION.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "Reason"
            ):
                found.add(node.attr)
    return found


def test_every_code_the_engine_defines_has_exactly_one_entry() -> None:
    codes = [entry.code for entry in ENTRIES]
    assert len(codes) == len(set(codes)), "a code is explained twice"
    assert set(codes) == {reason.value for reason in Reason}
    # Every code a rule gives is a member of the enum, so the catalogue covers the rules as well.
    assert _codes_the_engine_names() <= set(CATALOGUE)
    # And the outcome classes of the engine cover the enum: no code is neither.
    assert {r.value for r in REJECTING | QUERYING} == set(CATALOGUE)


def test_each_entry_has_the_outcome_the_engine_gives_its_code_alone() -> None:
    for reason in Reason:
        expected = outcome_for((reason,))
        assert expected in (Outcome.REJECTED, Outcome.QUERY)
        assert CATALOGUE[reason.value].outcome == expected.value, reason


def test_summaries_are_one_plain_sentence_and_actions_say_what_to_do() -> None:
    for entry in ENTRIES:
        for text in (entry.summary, entry.action):
            assert text[0].isupper(), entry.code
            assert text.endswith("."), entry.code
            assert len(text) <= 300, entry.code
            # One sentence: no full stop followed by another sentence inside it.
            assert not re.search(r"\.\s+[A-Z]", text[:-1]), entry.code
            # No engine vocabulary a provider would not know.
            for jargon in ("Modulus", "dup_key", "token", "REJECTING", "QUERYING", "outward code"):
                assert jargon not in text, (entry.code, jargon)
            # No other code's name: each entry explains itself.
            assert not re.search(r"\b[A-Z]+_[A-Z_]+\b", text), entry.code


def test_a_line_holding_every_code_fits_its_column_whole() -> None:
    # Reason codes are never cut: all of them at once, as a line stores them, fit the column.
    width = InvoiceLine.model_fields["reasons"].metadata
    max_length = next(m.max_length for m in width if hasattr(m, "max_length"))
    assert len(";".join(sorted(CATALOGUE))) <= max_length


def test_the_catalogue_validates_and_serialises_its_own_entries() -> None:
    for entry in ENTRIES:
        again = type(entry).model_validate_json(entry.model_dump_json())
        assert again == entry


codes = st.sampled_from(sorted(CATALOGUE))
unknown = st.text(min_size=1, max_size=12).filter(lambda s: s not in CATALOGUE)


@given(st.lists(st.one_of(codes, unknown), max_size=30))
def test_explain_gives_each_known_code_once_in_code_order(given_codes: list[str]) -> None:
    explained = explain(given_codes)
    assert [e.code for e in explained] == sorted({c for c in given_codes if c in CATALOGUE})
    assert all(e is CATALOGUE[e.code] for e in explained)


@given(st.lists(st.lists(codes, max_size=5), max_size=20))
def test_explain_lines_is_explain_of_every_code_on_the_page(page: list[list[str]]) -> None:
    assert explain_lines(page) == explain([c for line in page for c in line])
