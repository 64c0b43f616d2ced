"""CSV answers every service streams: cells safe to open in a spreadsheet, rows encoded in chunks,
the `Accept` negotiation that asks for them and a download name that cannot break its header."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import orjson

CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"

# Characters that make a spreadsheet treat a cell as a formula (OWASP: CSV injection).
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_CHARS: Final = frozenset(FORMULA_START)

# Rows encoded together before a chunk is handed on: large enough that writing is cheap, small
# enough that a chunk stays a few hundred kilobytes whatever the export's size.
ROWS_PER_CHUNK: Final = 500


def csv_cell(value: Any) -> str:
    """The text of one cell, with a leading apostrophe when it would otherwise start a formula
    (a spreadsheet shows the apostrophe-led text as it is and never evaluates it)."""
    # Called for every cell of a million-line export: the common case (a str) goes first.
    text: str
    if value.__class__ is str:
        text = value
    elif value is None:
        return ""
    else:
        text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    return "'" + text if text[:1] in _FORMULA_CHARS else text


class CsvEncoder:
    """Rows to RFC 4180 bytes (CRLF line ends), every cell through `csv_cell`."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def row(self, values: Iterable[Any]) -> None:
        self._writer.writerow(map(csv_cell, values))

    def take(self) -> bytes:
        """What was written since the last take, encoded as UTF-8."""
        out = self._buffer.getvalue().encode()
        self._buffer.seek(0)
        self._buffer.truncate()
        return out


def csv_chunks(
    columns: Sequence[str], rows: Iterable[Iterable[Any]], *, rows_per_chunk: int = ROWS_PER_CHUNK
) -> Iterator[bytes]:
    """The header and then `rows`, as chunks of encoded CSV; memory holds one chunk at a time."""
    encoder = CsvEncoder()
    encoder.row(columns)
    for n, row in enumerate(rows, 1):
        encoder.row(row)
        if n % rows_per_chunk == 0:
            yield encoder.take()
    yield encoder.take()


def _qualities(accept: str) -> dict[str, float]:
    """Each media range of an Accept header and its quality (RFC 9110 12.5.1), the first of a
    repeated range winning."""
    found: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        found.setdefault(media.lower(), quality)
    return found


def wants_csv(accept: str | None) -> bool:
    """Whether a request's Accept header asks for CSV rather than JSON: `text/csv` (or `text/*`)
    named with a quality above 0 and above that of JSON (`application/json`, else `application/*`,
    else `*/*`). JSON stays the answer to no header, to `*/*` alone, and to a header naming JSON
    first at the same quality."""
    if not accept:
        return False
    qualities = _qualities(accept)
    csv_range = next((r for r in ("text/csv", "text/*") if r in qualities), None)
    if csv_range is None or qualities[csv_range] <= 0:
        return False
    json_range = next((r for r in ("application/json", "application/*", "*/*") if r in qualities), None)
    if json_range is None:
        return True
    csv_q, json_q = qualities[csv_range], qualities[json_range]
    if csv_q != json_q:
        return csv_q > json_q
    order = list(qualities)
    return order.index(csv_range) < order.index(json_range)


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(stem: str, extension: str, *, fallback: str = "export", max_length: int = 80) -> str:
    """A download name made of `stem`: letters, digits, dot, underscore and hyphen only (anything
    else becomes one underscore), never starting with a dot or a hyphen, at most `max_length`
    characters before the extension; `fallback` when nothing of `stem` is left."""
    name = _UNSAFE_IN_NAME.sub("_", stem).strip("._-")[:max_length].strip("._-")
    return f"{name or fallback}.{extension}"


def attachment(filename: str) -> dict[str, str]:
    """The Content-Disposition header of a download named `filename` (made by `safe_filename`)."""
    return {"Content-Disposition": f'attachment; filename="{filename}"'}
