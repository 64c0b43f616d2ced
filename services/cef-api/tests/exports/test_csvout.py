"""cef_common.csvout: cells a spreadsheet never runs as formulas, CSV that parses back to what was
written, the Accept negotiation and download names."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cef_common.csvout import FORMULA_START, csv_cell, csv_chunks, safe_filename, wants_csv


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil.invalid","x")', '\'=HYPERLINK("http://evil.invalid","x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@x", "'@x"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("00001", "00001"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (12, "12"),
        (-3, "'-3"),
        (Decimal("503.46"), "503.46"),
        (date(2019, 4, 2), "2019-04-02"),
        ({"a": 1}, '{"a":1}'),
    ],
)
def test_csv_cell(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


@given(st.text())
def test_a_cell_never_starts_a_formula_and_keeps_the_text(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(FORMULA_START)
    assert cell == ("'" + text if text.startswith(FORMULA_START) else text)


rows = st.lists(st.lists(st.one_of(st.none(), st.text(), st.integers()), min_size=3, max_size=3), max_size=40)


@given(rows, st.integers(min_value=1, max_value=7))
def test_chunks_parse_back_to_the_escaped_cells(data: list[list[object]], per_chunk: int) -> None:
    chunks = list(csv_chunks(("a", "b", "c"), data, rows_per_chunk=per_chunk))
    assert len(chunks) == len(data) // per_chunk + 1
    text = b"".join(chunks).decode()
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == ["a", "b", "c"]
    assert parsed[1:] == [[csv_cell(v) for v in row] for row in data]


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("TEXT/CSV", True),
        ("text/*", True),
        ("text/csv;q=0", False),
        ("application/json, text/csv", False),
        ("text/csv, application/json", True),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv;q=0.4, application/json;q=0.9", False),
        ("text/csv;q=bad", False),
        ("text/html, */*;q=0.8", False),
        ("text/csv;q=0.1, */*", False),
        ("text/csv, */*", True),
        ("*/*, text/csv", False),
        ("text/csv, application/*;q=0.9", True),
        ("application/*, text/*", False),
    ],
)
def test_wants_csv(accept: str | None, csv_wanted: bool) -> None:
    assert wants_csv(accept) is csv_wanted


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("RTR-201904-0001-lines", "RTR-201904-0001-lines.csv"),
        ('inv "1"/../x\r\nSet-Cookie: a', "inv_1_.._x_Set-Cookie_a.csv"),
        ("..-", "export.csv"),
        ("é", "export.csv"),
        ("a" * 200, "a" * 80 + ".csv"),
    ],
)
def test_safe_filename(stem: str, name: str) -> None:
    assert safe_filename(stem, "csv") == name


@given(st.text())
def test_a_filename_is_always_safe_in_a_header(stem: str) -> None:
    name = safe_filename(stem, "csv")
    assert name.endswith(".csv")
    assert len(name) <= 84
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert not name.startswith((".", "-"))
