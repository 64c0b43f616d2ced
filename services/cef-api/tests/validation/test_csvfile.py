"""The backing data reader: encodings, line endings, quoting, columns and file-level refusals."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cef_api.validation.csvfile import (
    REQUIRED_COLUMNS,
    BackingBatch,
    BackingDataError,
    RawLine,
    count_backing_data,
    read_backing_data,
    read_backing_values,
    read_batch_values,
    split_backing_batches,
    survey_backing_data,
)
from cef_api.validation.prepared import PREPARED_COLUMNS, prepare_backing_data, prepare_batch

HEADER = "line_ref,nhs_number,date_of_birth,postcode,point_of_delivery,hrg_code,activity_date,amount"
ROW1 = "00001,943 476 5919,1980-01-01,ts18 1hu,dc,hn12a,2019-07-10,2874.30"
ROW2 = "00002,9434765919,,TS18 1HU,EL,HN12A,2019-07-11,100"


def read(data: bytes | str, chunk: int | None = None) -> list[RawLine]:
    raw = data.encode() if isinstance(data, str) else data
    chunks = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return list(read_backing_data(chunks))


def refused(data: bytes | str) -> BackingDataError:
    with pytest.raises(BackingDataError) as info:
        read(data)
    assert info.value.status == 422
    assert info.value.code == "backing-data-invalid"
    return info.value


def test_rows_are_trimmed_and_empty_values_are_missing() -> None:
    lines = read(f"{HEADER}\n  00001 , 943 476 5919 ,   ,ts18 1hu,dc,hn12a,2019-07-10, 2874.30 \n")
    assert lines == [
        RawLine(
            1,
            {
                "line_ref": "00001",
                "nhs_number": "943 476 5919",
                "date_of_birth": None,
                "postcode": "ts18 1hu",
                "point_of_delivery": "dc",
                "hrg_code": "hn12a",
                "activity_date": "2019-07-10",
                "amount": "2874.30",
            },
        )
    ]


def test_bom_and_crlf() -> None:
    plain = read(f"{HEADER}\n{ROW1}\n{ROW2}\n")
    assert read(("\ufeff" + f"{HEADER}\r\n{ROW1}\r\n{ROW2}\r\n").encode()) == plain
    assert read(f"{HEADER}\r\n{ROW1}\r\n{ROW2}") == plain  # no final line ending


def test_columns_in_any_order_named_in_any_case_unknown_ignored() -> None:
    reordered = (
        " Amount ,HRG_CODE,comment,line_ref,activity_date,point_of_delivery,nhs_number,Extra\n"
        "2874.30,hn12a,hello,00001,2019-07-10,dc,943 476 5919,x\n"
    )
    [line] = read(reordered)
    assert line.values == {
        "amount": "2874.30",
        "hrg_code": "hn12a",
        "line_ref": "00001",
        "activity_date": "2019-07-10",
        "point_of_delivery": "dc",
        "nhs_number": "943 476 5919",
    }
    assert line.field_count is None


def test_quoted_fields_with_commas_quotes_and_newlines() -> None:
    data = (
        f"{HEADER},gp_practice_code\n"
        '"00,1","943 476 5919",,"TS18\n1HU",DC,"HN""12A",2019-07-10,"2874.30","A8"\n'
    )
    [line] = read(data)
    assert line.values["line_ref"] == "00,1"
    assert line.values["postcode"] == "TS18\n1HU"
    assert line.values["hrg_code"] == 'HN"12A'
    assert line.values["gp_practice_code"] == "A8"


def test_blank_rows_are_skipped_and_line_numbers_count_data_rows() -> None:
    lines = read(f"\n{HEADER}\n\n{ROW1}\n,,,,,,,\n   \n{ROW2}\n\n")
    assert [(line.line_no, line.values["line_ref"]) for line in lines] == [(1, "00001"), (2, "00002")]


def test_a_row_of_another_width_is_kept_and_flagged() -> None:
    lines = read(f"{HEADER}\n00001,9434765919,,TS18 1HU,DC,HN12A,2019-07-10,1,234.50\n00002,9434765919\n")
    assert lines[0].field_count == 9
    assert lines[0].values["amount"] == "1"
    assert lines[1].field_count == 2
    assert lines[1].values["amount"] is None


@pytest.mark.parametrize("missing", REQUIRED_COLUMNS)
def test_a_missing_required_column_is_named(missing: str) -> None:
    columns = [c for c in HEADER.split(",") if c != missing]
    error = refused(",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n")
    assert missing in error.detail
    assert error.extra["column"] == missing


def test_all_missing_required_columns_are_named() -> None:
    error = refused("line_ref,foo\n1,2\n")
    for column in ("nhs_number", "point_of_delivery", "hrg_code", "activity_date", "amount"):
        assert column in error.detail


def test_a_column_named_twice_is_refused() -> None:
    error = refused(f"{HEADER},Amount\n{ROW1},1\n")
    assert error.extra["column"] == "amount"


def test_repeated_line_ref_names_the_first_repeat_and_both_rows() -> None:
    data = f"{HEADER}\n{ROW1}\n{ROW2}\n{ROW1.replace('00001', ' 00002 ')}\n{ROW1}\n"
    error = refused(data)
    assert "'00002'" in error.detail
    assert "2 and 3" in error.detail
    assert error.extra == {"line": 3, "column": "line_ref"}


def test_missing_line_refs_are_not_repeats() -> None:
    data = f"{HEADER}\n{ROW1.replace('00001', '')}\n{ROW1.replace('00001', '  ')}\n"
    assert [line.values["line_ref"] for line in read(data)] == [None, None]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n", b"\r\n  \r\n", b",,,\n"])
def test_an_empty_file_is_refused(data: bytes) -> None:
    assert "empty" in refused(data).detail


def test_a_header_alone_is_a_file_of_no_lines() -> None:
    assert read(HEADER + "\n") == []


def test_bytes_that_are_not_utf8_are_refused_naming_the_line() -> None:
    data = f"{HEADER}\n{ROW1}\n".encode() + "00002,9434765919,,Ménière,DC,HN12A,2019-07-10,1\n".encode(
        "latin-1"
    )
    error = refused(data)
    assert error.extra["line"] == 3
    assert "UTF-8" in error.detail
    # The same wherever the chunks are cut.
    for size in (1, 2, 3, 5, 64):
        with pytest.raises(BackingDataError) as info:
            read(data, chunk=size)
        assert info.value.extra["line"] == 3


def test_a_truncated_multibyte_character_at_the_end_is_refused() -> None:
    error = refused(f"{HEADER}\n{ROW1}".encode() + "é".encode()[:1])
    assert error.extra["line"] == 2


def test_unbalanced_quotes_refuse_the_file() -> None:
    assert "CSV" in refused(f'{HEADER}\n"00001,9434765919,,,DC,HN12A,2019-07-10,1\n').detail
    assert "CSV" in refused(f'{HEADER}\n"00001"x,9434765919,,,DC,HN12A,2019-07-10,1\n').detail


def test_nul_characters_refuse_the_file_naming_the_line() -> None:
    error = refused(f"{HEADER}\n{ROW1}\n00\x0001,9434765919,,,DC,HN12A,2019-07-10,1\n")
    assert "NUL" in error.detail
    assert error.extra["line"] == 3


def test_values_may_hold_unicode_line_separators() -> None:
    # str.splitlines would cut records at these; csv and the reader must not.
    [line] = read(f"{HEADER}\n00001,9434765919,,TS18\u2028\x851HU,DC,HN12A,2019-07-10,1\n")
    assert line.values["postcode"] == "TS18\u2028\x851HU"
    assert line.values["amount"] == "1"


MULTIBYTE = (
    "\ufeffline_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount,note\r\n"
    '00001,943 476 5919,DC,HN12A,2019-07-10,1.5,"naïve, café\r\nß€𝄞"\r\n'
    "00002,9434765919,DC,HN12A,2019-07-11,2,日本語\r\n"
    "00003,9434765919,NEL,HN12A,2019-07-12,3,\r\n"
)


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=1, max_value=len(MULTIBYTE.encode()) - 1), max_size=12))
def test_chunk_boundaries_anywhere_give_the_same_rows(cuts: list[int]) -> None:
    data = MULTIBYTE.encode()
    points = [0, *sorted(set(cuts)), len(data)]
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert list(read_backing_data(chunks)) == read(data)


def test_every_single_cut_and_byte_by_byte() -> None:
    data = MULTIBYTE.encode()
    whole = read(data)
    assert [line.values["amount"] for line in whole] == ["1.5", "2", "3"]
    for cut in range(1, len(data)):
        assert list(read_backing_data([data[:cut], b"", data[cut:]])) == whole
    assert read(data, chunk=1) == whole


# --- batches cut where the structural pass noted ----------------------------------------------------

_CELL = st.sampled_from(["", " ", "a", "x,y", 'say "hi"', "two\nlines", "cr\rlf\r\n", "é\u2028", "  pad  "])
_ENDINGS = st.sampled_from(["\n", "\r\n"])


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    """A file the structural pass accepts: quoted fields holding commas, quotes and line breaks,
    blank rows, rows of another width, either line ending, an optional BOM and no final ending."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(_ENDINGS))
    header = ["extra", "line_ref", "nhs_number", "amount", "point_of_delivery", "hrg_code", "activity_date"]
    writer.writerow(header)
    for n in range(draw(st.integers(min_value=0, max_value=25))):
        kind = draw(st.sampled_from(["row", "row", "row", "blank", "short", "long", "no-ref"]))
        if kind == "blank":
            writer.writerow(draw(st.sampled_from([[], [""], ["", " ", ""]])))
            continue
        cells = [draw(_CELL) for _ in header]
        cells[1] = "" if kind == "no-ref" else f"ref{n}"
        if kind == "short":
            cells = cells[:3]
        elif kind == "long":
            cells += ["surplus"]
        writer.writerow(cells)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return (("\ufeff" if draw(st.booleans()) else "") + text).encode()


@settings(max_examples=300, deadline=None)
@given(_files(), st.integers(min_value=1, max_value=8), st.integers(min_value=1, max_value=64))
def test_batches_cut_where_the_survey_noted_read_as_the_whole_file_does(
    data: bytes, batch_lines: int, chunk: int
) -> None:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    whole = list(read_backing_values(chunks, PREPARED_COLUMNS))
    survey = survey_backing_data(chunks, batch_lines=batch_lines)
    assert survey.lines == len(whole) == count_backing_data(chunks)
    layout, batches = split_backing_batches(chunks, survey, PREPARED_COLUMNS)
    cut = list(batches)
    assert all(b.lines == batch_lines for b in cut[:-1])
    assert [row for b in cut for row in read_batch_values(b, layout)] == whole
    assert [line for b in cut for line in prepare_batch(b, layout)] == list(prepare_backing_data(chunks))


def test_a_batch_that_does_not_hold_the_rows_counted_is_refused() -> None:
    data = f"{HEADER}\n{ROW1}\n{ROW2}\n".encode()
    survey = survey_backing_data([data], batch_lines=1)
    layout, batches = split_backing_batches([data], survey, PREPARED_COLUMNS)
    first = next(batches)
    wrong = BackingBatch(first.first_line_no, first.lines + 1, first.text)
    with pytest.raises(RuntimeError, match="held 1 rows where 2 were counted"):
        list(read_batch_values(wrong, layout))


def test_split_needs_a_survey_of_batches() -> None:
    data = f"{HEADER}\n{ROW1}\n".encode()
    with pytest.raises(ValueError, match="batch_lines"):
        split_backing_batches([data], survey_backing_data([data]), PREPARED_COLUMNS)
