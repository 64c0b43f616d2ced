"""The fast paths the service runs on big files answer exactly as the reference readers do:
`count_backing_data` (the structural pass) and `prepare_backing_data` (parse straight to
prepared lines) against `read_backing_data` and `prepare_line`, on thousands of messy files."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from cef_api.validation.csvfile import BackingDataError, count_backing_data, read_backing_data
from cef_api.validation.prepared import prepare_backing_data, prepare_line

COLUMNS = [
    "line_ref", "nhs_number", "point_of_delivery", "hrg_code", "activity_date", "amount", "postcode",
    "date_of_birth", "discharge_date", "service_code", "gp_practice_code", "extra",
]  # fmt: skip
PIECES = [
    "", " ", "a", "el", "EL", "nel", "dc", "1", "12.5", "12.345", "2019-07-01", "2019-02-30", "2019-07-31",
    "943 476 5919", "9434765919", "9434765918", "TS18 1HU", "ts181hu", "x,y", '"q"', '"a""b"', "\u00e9",
    "r1", "r2", "r3", "HR01A", "NCBPS13B",
]  # fmt: skip


def _outcome(read: Callable[[list[bytes]], Any], chunks: list[bytes]) -> tuple[Any, ...]:
    try:
        return ("ok", read(chunks))
    except BackingDataError as exc:
        return ("error", exc.detail, exc.extra)


def _messy_file(rng: random.Random) -> bytes:
    header = rng.sample(COLUMNS, rng.randint(4, 12))
    if rng.random() < 0.08:
        header.append(rng.choice(COLUMNS))  # a column named twice
    lines = [
        ",".join(h.upper() if rng.random() < 0.2 else (" " + h if rng.random() < 0.1 else h) for h in header)
    ]
    if rng.random() < 0.05:
        lines.insert(0, ",,")
    for i in range(rng.randint(0, 8)):
        width = len(header) + rng.choice([-2, -1, 0, 0, 0, 0, 0, 1])
        row = [rng.choice(PIECES) for _ in range(max(width, 0))]
        if rng.random() < 0.7 and "line_ref" in header and header.index("line_ref") < len(row):
            row[header.index("line_ref")] = f"r{i}" if rng.random() < 0.8 else rng.choice(["r1", " r1", ""])
        if rng.random() < 0.05:
            row = [""] * len(row)
        lines.append(",".join(row))
    data = (rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n"])).encode()
    if rng.random() < 0.04:
        data = data[:5] + b"\xff" + data[5:]  # not UTF-8
    if rng.random() < 0.05:
        data = b"\xef\xbb\xbf" + data
    if rng.random() < 0.03:
        data += b'"unclosed'
    return data


def _chunked(rng: random.Random, data: bytes) -> list[bytes]:
    cut = rng.randint(0, len(data))
    return [data[:cut], data[cut:]]


@pytest.mark.parametrize("seed", range(4))
def test_the_structural_pass_agrees_with_the_full_reader(seed: int) -> None:
    rng = random.Random(seed)
    compared = 0
    for _ in range(1500):
        chunks = _chunked(rng, _messy_file(rng))
        full = _outcome(lambda c: sum(1 for _ in read_backing_data(c)), chunks)
        assert _outcome(count_backing_data, chunks) == full, chunks
        compared += full[0] == "ok"
    assert compared > 100  # the generator must not only make broken files


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("check_repeats", [True, False])
def test_parsing_straight_to_prepared_lines_agrees_with_prepare_line(seed: int, check_repeats: bool) -> None:
    rng = random.Random(1000 + seed)

    def reference(c: Iterable[bytes]) -> list[str]:
        return [repr(prepare_line(r)) for r in read_backing_data(c, check_repeats=check_repeats)]

    def fast(c: Iterable[bytes]) -> list[str]:
        return [repr(p) for p in prepare_backing_data(c, check_repeats=check_repeats)]

    compared = 0
    for _ in range(1000):
        chunks = _chunked(rng, _messy_file(rng))
        expected = _outcome(reference, chunks)
        assert _outcome(fast, chunks) == expected, chunks
        compared += expected[0] == "ok"
    assert compared > 100
