"""Loading at population scale: the fast parse of the trace and the registrations gives exactly what
the checked path gives, files are parsed and tokenised a chunk at a time yet still refused whole
(a problem or a repeat after the first chunk keeps nothing), and a chunked load stores the same
rows as a whole one, on both databases."""

from __future__ import annotations

from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api

from cef_api.reference import parsers, service
from cef_api.reference.parsers import ReferenceFileError, parse_chunks, parse_dataset

CSV = {"Content-Type": "text/csv"}
VALID = "9434765919"
OTHER = "9990394083"
THIRD = "9990000018"

# Every spelling the checked path accepts or refuses, beside the common ones the fast path takes.
PATIENTS = (
    "nhs_number,date_of_birth,postcode\n"
    f"{VALID},1970-01-31,TS18 1HU\n"
    f" 999 039 4083 ,,ts181hu\n"  # spaced NHS number, no date, lower case postcode run together
    f"{THIRD},1999-12-31,\n"  # no postcode
    "9990000026,1980-02-29,TS1\t8 1HU\n"  # a tab in the postcode
    "9990000034,,X\n"  # a postcode too short for a district
    "9990000042,2001-02-03,  CF10 1AA  \n"
)
REGISTRATIONS = (
    "nhs_number,gp_practice_code,registered_from,registered_to\n"
    f"{VALID},A81001,2010-01-01,\n"
    f"{VALID},a81002,2000-01-01,2009-12-31\n"  # lower case practice
    f"999-039-4083, A81001 ,2019-03-01,2019-03-01\n"  # hyphens; a one-day registration
    f"{THIRD},B82001,2012-06-30,\n"
)
BAD_PATIENTS = (
    "nhs_number,date_of_birth,postcode\n"
    f"{VALID},1970-01-31,TS18 1HU\n"
    "9434765918,1970-01-31,TS18 1HU\n"  # fails Modulus 11
    f"{OTHER},1970-02-30,TS18 1HU\n"  # no such date
    f"{THIRD},1970-01-31,TS18 1HU\n"
)
BAD_REGISTRATIONS = (
    "nhs_number,gp_practice_code,registered_from,registered_to\n"
    f"{VALID},A81001,2010-01-01,2009-01-01\n"  # ends before it starts
    f"{OTHER},A81-001,2010-01-01,\n"  # not a code
    f"{THIRD},A81001,,\n"  # no start
    f"{THIRD},2010-01-01,2010-01-01,\n"  # a date where the practice goes
)


def _checked_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parses with the checked path alone (no fast builder), as before the fast path existed."""
    for dataset in ("patients", "registrations"):
        fmt = parsers._TABLES[dataset]
        monkeypatch.setitem(
            parsers._TABLES,
            dataset,
            parsers._TableFormat(
                fmt.columns, fmt.row, fmt.build, fmt.key, fmt.key_columns, fmt.describe_key, None
            ),
        )


def _refusal(dataset: str, text: str) -> dict[str, Any]:
    with pytest.raises(ReferenceFileError) as info:
        parse_dataset(dataset, text.encode())
    return {"detail": info.value.detail, "errors": info.value.errors, "extra": info.value.extra}


@pytest.mark.parametrize(
    ("dataset", "text"),
    [("patients", PATIENTS), ("registrations", REGISTRATIONS)],
)
def test_the_fast_path_gives_what_the_checked_path_gives(
    dataset: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = parse_dataset(dataset, text.encode())
    assert len(fast) == text.count("\n") - 1
    _checked_only(monkeypatch)
    assert parse_dataset(dataset, text.encode()) == fast


@pytest.mark.parametrize(
    ("dataset", "text"),
    [("patients", BAD_PATIENTS), ("registrations", BAD_REGISTRATIONS)],
)
def test_the_fast_path_refuses_what_the_checked_path_refuses(
    dataset: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _refusal(dataset, text)
    assert fast["errors"], "the file has bad rows"
    _checked_only(monkeypatch)
    assert _refusal(dataset, text) == fast


def test_chunks_stop_at_the_first_problem_and_the_file_is_refused_whole() -> None:
    rows = [
        f"{n}{generate_world.nhs_check_digit(n)}"
        for n in (f"{i:09d}" for i in range(600_000_000, 600_000_100))
    ]
    numbers = [r for r in rows if not r.endswith("None")][:40]
    body = "nhs_number,date_of_birth,postcode\n" + "".join(f"{n},,\n" for n in numbers)
    body += "not a number,,\n" + "".join(f"{n},,\n" for n in numbers[:3])  # and three repeats
    chunks = parse_chunks("patients", body.encode(), chunk_rows=10)
    got = [next(chunks) for _ in range(4)]
    assert [len(c) for c in got] == [10, 10, 10, 10]
    with pytest.raises(ReferenceFileError) as info:
        next(chunks)
    assert [e["line"] for e in info.value.errors] == [42, 43, 44, 45]
    assert info.value.errors[1]["message"] == "repeats the nhs_number of line 2"


def test_repeats_can_be_left_to_the_caller() -> None:
    body = f"nhs_number,date_of_birth,postcode\n{VALID},,\n{VALID},,\n".encode()
    assert sum(len(c) for c in parse_chunks("patients", body, check_repeats=False)) == 2
    with pytest.raises(ReferenceFileError):
        list(parse_chunks("patients", body))


def _stored(api: Api, sql: str) -> list[tuple[Any, ...]]:
    with api.app.state.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(sql)))


async def _put(api: Api, dataset: str, body: bytes) -> Any:
    return await api.client.put(
        f"/v1/reference/{dataset}", content=body, headers={**api.h("reference:write"), **CSV}
    )


async def test_a_chunked_load_stores_what_a_whole_one_does(
    api: Api, world: generate_world.World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.load_world(world)
    files = world.reference_files()
    patients = "SELECT nhs_token, dob_token, outward_code FROM ref_patient WHERE version = {v}"
    registrations = (
        "SELECT nhs_token, gp_practice_code, registered_from, registered_to FROM ref_registration "
        "WHERE version = {v}"
    )
    whole = _stored(api, patients.format(v=1)), _stored(api, registrations.format(v=1))
    # Chunks of 7 rows: many tokeniser calls, each but the first in a second thread. Without a
    # fingerprint key the same files are read whole again (with one, nothing would be read).
    monkeypatch.setattr(service, "CHUNK_ROWS", 7)
    monkeypatch.setattr(api.app.state, "fingerprint_key", None)
    for dataset in ("patients", "registrations"):
        r = await _put(api, dataset, files[dataset])
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
    chunked = _stored(api, patients.format(v=2)), _stored(api, registrations.format(v=2))
    assert chunked == whole
    assert len(whole[0]) == files["patients"].count(b"\n") - 1
    assert len(whole[1]) == files["registrations"].count(b"\n") - 1


async def test_a_problem_after_the_first_chunks_keeps_nothing(
    api: Api, world: generate_world.World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.load_world(world)
    monkeypatch.setattr(service, "CHUNK_ROWS", 5)
    body = world.reference_files()["registrations"]
    lines = body.count(b"\n")
    before = _stored(api, "SELECT version, nhs_token FROM ref_registration")
    # A repeat of the first row at the end (found once the file is read) and a bad date before it.
    first_row = body.split(b"\n")[1]
    bad = body + b"9434765919,A81001,2019-02-30,\n" + first_row + b"\n"
    r = await _put(api, "registrations", bad)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert [(e["line"], e["column"]) for e in problem["errors"]] == [
        (lines + 1, "registered_from"),
        (lines + 2, None),
    ]
    assert "repeats the nhs_number, gp_practice_code and registered_from of line 2" in str(problem["errors"])
    # A repeat alone, in a file otherwise good: found from the rows' key digests, refused by line.
    r = await _put(api, "registrations", body + first_row + b"\n")
    assert r.status_code == 422, r.text
    assert [e["line"] for e in r.json()["errors"]] == [lines + 1]
    assert _stored(api, "SELECT version, nhs_token FROM ref_registration") == before
    listing = (await api.client.get("/v1/reference", headers=api.h("reference:write"))).json()
    assert {i["dataset"]: i["version"] for i in listing["items"]}["registrations"] == 1


async def test_a_trace_repeating_a_patient_is_refused_by_line(api: Api) -> None:
    body = f"nhs_number,date_of_birth,postcode\n{VALID},,\n{OTHER},,\n{VALID},,\n".encode()
    r = await _put(api, "patients", body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"line": 4, "column": None, "message": "repeats the nhs_number of line 2"}]
    assert _stored(api, "SELECT nhs_token FROM ref_patient") == []


def test_the_scale_benchmark_world_parses_and_its_reload_changes_about_a_fiftieth(tmp_path: Any) -> None:
    import reference_scale_bench as bench

    pop, counts = bench.write_world(tmp_path, 2_000, 3_000, seed=1)
    first = {name: (tmp_path / f"{name}.csv").read_bytes() for name in ("patients", "registrations")}
    assert len(parse_dataset("patients", first["patients"])) == counts["patients"] == 2_000
    assert len(parse_dataset("registrations", first["registrations"])) == counts["registrations"] == 3_000
    for dataset, name in (("gp-practices", "epraccur"), ("tariff", "tariff"), ("providers", "providers")):
        assert parse_dataset(dataset, (tmp_path / f"{name}.csv").read_bytes())
    bench.write_people(tmp_path, pop, month=1, share=0.02)
    for name, before in first.items():
        after = (tmp_path / f"{name}.csv").read_bytes()
        parse_dataset(name, after)
        old, new = set(before.splitlines()), set(after.splitlines())
        changed = len(old ^ new) / len(old)
        assert 0.01 < changed < 0.06, (name, changed)
