"""Reloads that write only what changed: a reload keeps the rows of the records the version in force
holds (recognised by their keyed fingerprints), retires the rows of records that left the file and
adds the rest; the rows in force are then exactly those a whole load of the same file stores, the
versions an open invoice reads keep their rows, and a refused reload is refused as a whole read
refuses it. On both databases."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api
from sqlmodel import Session

from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.reference import fingerprints, repository, service
from cef_api.reference.fingerprints import Fingerprints

CSV = {"Content-Type": "text/csv"}
PATIENT_COLUMNS = ["nhs_token", "dob_token", "outward_code"]
REGISTRATION_COLUMNS = ["nhs_token", "gp_practice_code", "registered_from", "registered_to"]
COLUMNS = {"patients": PATIENT_COLUMNS, "registrations": REGISTRATION_COLUMNS}


async def _put(api: Api, dataset: str, body: bytes) -> Any:
    return await api.client.put(
        f"/v1/reference/{dataset}", content=body, headers={**api.h("reference:write"), **CSV}
    )


def _in_force(api: Api, dataset: str, version: int) -> list[tuple[Any, ...]]:
    with Session(api.app.state.engine) as session:
        return sorted(tuple(r) for r in repository.all_rows(session, dataset, version, COLUMNS[dataset]))


def _lines(body: bytes) -> tuple[bytes, list[bytes]]:
    header, *rows = body.rstrip(b"\n").split(b"\n")
    return header, rows


def _body(header: bytes, rows: list[bytes]) -> bytes:
    return b"\n".join([header, *rows]) + b"\n"


def _month_later(body: bytes, dataset: str, rng: random.Random, share: float) -> tuple[bytes, int, int]:
    """The file a month on: `share` of its records gone, as many changed (a field edited), new
    records added, and the order shuffled. The records taken out and put in."""
    header, rows = _lines(body)
    count = max(1, int(len(rows) * share))
    gone = set(rng.sample(range(len(rows)), count))
    changed = set(rng.sample(sorted(set(range(len(rows))) - gone), count))
    kept = [row for i, row in enumerate(rows) if i not in gone and i not in changed]
    edited = []
    for i in sorted(changed):
        fields = rows[i].split(b",")
        if dataset == "patients":
            fields[2] = rng.choice([b"TS1 1AA", b"TS17 6QQ", b"DL3 0PS", b""])
        else:
            fields[3] = rng.choice([b"2023-03-31", b"2024-01-01", b""]) if not fields[3] else b""
        edited.append(b",".join(fields))
    extra = []
    if dataset == "patients":
        used = {row.split(b",")[0].decode() for row in rows}
        for _ in range(count):
            number = generate_world.nhs_number(rng, used)
            used.add(number)
            extra.append(f"{number},1990-05-0{rng.randint(1, 9)},TS18 1HU".encode())
    out = kept + edited + extra
    rng.shuffle(out)
    return _body(header, out), len(set(rows) - set(out)), len(set(out) - set(rows))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_reload_keeps_what_stands_and_ends_where_a_whole_load_ends(
    api: Api, world: generate_world.World, seed: int
) -> None:
    await api.load_world(world)
    files = world.reference_files()
    rng = random.Random(seed)
    for dataset in ("patients", "registrations"):
        first = _in_force(api, dataset, 1)
        body, taken_out, put_in = _month_later(files[dataset], dataset, rng, 0.05)
        r = await _put(api, dataset, body)
        assert r.status_code == 200, r.text
        result = r.json()
        rows = len(_lines(body)[1])
        assert result["version"] == 2
        assert result["rows"] == rows
        assert result["retired"] == taken_out
        assert result["added"] == put_in
        assert result["kept"] == rows - put_in
        reloaded = _in_force(api, dataset, 2)
        assert reloaded != first
        # The same file loaded whole (no fingerprint key: every record read) stores the same rows.
        api.app.state.fingerprint_key, key = None, api.app.state.fingerprint_key
        try:
            r = await _put(api, dataset, body)
        finally:
            api.app.state.fingerprint_key = key
        assert r.status_code == 200, r.text
        assert r.json()["added"] == rows
        assert r.json()["kept"] == 0
        assert _in_force(api, dataset, 3) == reloaded


async def test_the_same_file_again_changes_nothing_and_the_same_records_write_no_row(
    api: Api, world: generate_world.World
) -> None:
    await api.load_world(world)
    body = world.reference_files()["registrations"]
    before = _in_force(api, "registrations", 1)
    # The very file again: nothing changes, version 1 stays in force.
    r = await _put(api, "registrations", body)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("version", "rows", "added", "kept", "retired")} == {
        "version": 1,
        "rows": len(before),
        "added": 0,
        "kept": len(before),
        "retired": 0,
    }
    with api.app.state.engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM audit_outbox WHERE payload LIKE :shape"),
                {"shape": '%"unchanged":true%'},
            ).scalar_one()
            == 1
        )
    # The same records in another order: a new version, no row written.
    header, rows = _lines(body)
    r = await _put(api, "registrations", _body(header, rows[::-1]))
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("version", "added", "kept", "retired")} == {
        "version": 2,
        "added": 0,
        "kept": len(before),
        "retired": 0,
    }
    assert r.json()["key_version"] is not None
    assert _in_force(api, "registrations", 2) == before
    with api.app.state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ref_registration")).scalar_one() == len(before)
        # Version 1's record is gone (no invoice reads it); its rows are version 2's.
        versions = conn.execute(
            sa.text("SELECT version FROM reference_version WHERE dataset = 'registrations'")
        ).scalars()
        assert list(versions) == [2]


async def test_an_open_invoice_keeps_reading_the_version_it_started_with(
    api: Api, world: generate_world.World
) -> None:
    await api.load_world(world)
    files = world.reference_files()
    engine = api.app.state.engine
    with Session(engine) as session:
        versions = {d: v.version for d, v in repository.current_versions(session).items()}
        invoice = Invoice(
            id=str(uuid.uuid4()),
            invoice_number="PINNED-1",
            provider_code="RTR",
            commissioner_code="00L",
            invoice_date=date(2019, 5, 3),
            period_start=date(2019, 4, 1),
            period_end=date(2019, 4, 30),
            status=InvoiceStatus.VALIDATING,
            submitted_at=datetime.now(UTC),
            submitted_by="tests",
            request_hash="0" * 64,
            backing_bytes=1,
            background=False,
            reference_versions=json.dumps(versions),
        )
        session.add(invoice)
        session.commit()
        seq = invoice.seq
    first = _in_force(api, "patients", 1)
    body, _, _ = _month_later(files["patients"], "patients", random.Random(5), 0.1)
    second_body, _, _ = _month_later(body, "patients", random.Random(6), 0.1)
    for text in (body, second_body):
        r = await _put(api, "patients", text)
        assert r.status_code == 200, r.text
    third = _in_force(api, "patients", 3)
    # Version 1 is read by the open invoice: its rows stay. Version 2 is read by nobody: its own
    # rows (added in it, retired in 3) are gone, and so is its record.
    assert _in_force(api, "patients", 1) == first
    with Session(engine) as session:
        assert set(repository.versions_named(session, {"patients": 1}))
        assert not repository.versions_named(session, {"patients": 2})
        snapshot = service.ReferenceSnapshot.load(
            session, repository.versions_named(session, {"patients": 1}), memory_rows=10**6
        )
        assert snapshot.everyone is not None
        assert len(snapshot.everyone.patients) == len(first)
    # The invoice finishes: nothing reads version 1 any more, and only the rows in force remain.
    with Session(engine) as session:
        stored = session.get(Invoice, seq)
        assert stored is not None
        stored.status = InvoiceStatus.VALIDATED
        session.add(stored)
        session.commit()
    service.prune_in_batches(engine)
    assert _in_force(api, "patients", 3) == third
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ref_patient")).scalar_one() == len(third)


async def test_a_record_repeating_a_kept_one_is_refused_with_the_lines_of_the_whole_file(
    api: Api, world: generate_world.World
) -> None:
    await api.load_world(world)
    header, rows = _lines(world.reference_files()["patients"])
    # The first patient with a date of birth corrected, the record as it was still in the file.
    fields = rows[0].split(b",")
    fields[1] = b"1901-01-01"
    body = _body(header, [*rows, b",".join(fields)])
    before = _in_force(api, "patients", 1)
    r = await _put(api, "patients", body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {"line": len(rows) + 2, "column": None, "message": "repeats the nhs_number of line 2"}
    ]
    assert _in_force(api, "patients", 1) == before
    with api.app.state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT max(version) FROM reference_version")).scalar_one() == 1
    # A bad record among the new ones: refused with its line in the whole file, nothing kept.
    r = await _put(api, "patients", _body(header, [*rows[:3], b"9434765918,,", *rows[3:]]))
    assert r.status_code == 422, r.text
    assert [(e["line"], e["column"]) for e in r.json()["errors"]] == [(5, "nhs_number")]


async def test_a_file_with_its_columns_moved_is_read_whole(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    header, rows = _lines(world.reference_files()["registrations"])
    first = _in_force(api, "registrations", 1)
    names = header.split(b",")
    order = [1, 0, 3, 2]
    moved = _body(
        b",".join(names[i] for i in order),
        [b",".join(row.split(b",")[i] for i in order) for row in rows],
    )
    r = await _put(api, "registrations", moved)
    assert r.status_code == 200, r.text
    assert (r.json()["added"], r.json()["kept"], r.json()["retired"]) == (len(rows), 0, len(rows))
    # The same rows, all read again; version 1 (read by nobody) gone with its rows.
    assert _in_force(api, "registrations", 2) == first
    with api.app.state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ref_registration")).scalar_one() == len(rows)


async def test_a_load_finishing_first_makes_a_reload_send_again(
    api: Api, world: generate_world.World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.load_world(world)
    body = world.reference_files()["patients"]
    header, rows = _lines(body)
    reading = service._rows_for_storage
    raced = False

    def read_while_another_load_commits(*args: Any, **kwargs: Any) -> Any:
        nonlocal raced
        out = reading(*args, **kwargs)
        if not raced:
            raced = True
            # Another load of the dataset commits while this one is reading its file.
            from cef_api.reference.router import load_and_commit

            load_and_commit(
                api.app.state.engine,
                dataset="patients",
                data=_body(header, rows[1:]),
                tokeniser=api.app.state.tokeniser,
                principal=None,
                actor="other",
                fingerprint_key=api.app.state.fingerprint_key,
            )
        return out

    monkeypatch.setattr(service, "_rows_for_storage", read_while_another_load_commits)
    r = await _put(api, "patients", _body(header, rows[:-1]))
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "reference-load-conflict"
    # The other load stands; sent again, this one loads on top of it.
    assert len(_in_force(api, "patients", 2)) == len(rows) - 1
    r = await _put(api, "patients", _body(header, rows[:-1]))
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["added"], r.json()["retired"]) == (3, 1, 1)


def test_fingerprints_are_keyed_by_the_key_the_dataset_and_the_header() -> None:
    record = ["9434765919", "1970-01-31", "TS18 1HU"]
    header = ["nhs_number", "date_of_birth", "postcode"]

    def fingerprint(key: bytes, dataset: str, header: list[str], fields: list[str]) -> bytes:
        prints = Fingerprints(key, dataset)
        prints.start(header)
        prints.see(fields)
        return prints.fingerprints[-1]

    key = fingerprints.derive_key(b"k" * 32)
    assert key != b"k" * 32
    one = fingerprint(key, "patients", header, record)
    assert len(one) == fingerprints.DIGEST_BYTES
    assert fingerprint(key, "patients", header, record) == one
    assert fingerprint(fingerprints.derive_key(b"j" * 32), "patients", header, record) != one
    assert fingerprint(key, "registrations", header, record) != one
    assert fingerprint(key, "patients", [*header[:2], " postcode"], record) != one
    assert fingerprint(key, "patients", header, [*record[:2], "TS18 1HU "]) != one


def test_a_first_pass_over_the_bytes_finds_the_lines_a_parse_would_fingerprint() -> None:
    key = fingerprints.derive_key(b"k" * 32)
    lines = ["9434765919,1970-01-31,TS18 1HU", "9990394083,,", "9990000018,1999-12-31,DL3 0PS"]
    parsed = Fingerprints(key, "patients")
    parsed.start(["nhs_number", "date_of_birth", "postcode"])
    for line in lines:
        parsed.see(line.split(","))
    known = dict(zip(parsed.fingerprints, (11, 12, 13), strict=True))
    assert fingerprints.one_record_a_line(b"nhs_number\r\n9434765919\r\n")
    # The file a month on, with a byte order mark, CRLF line ends and a blank line: the first and
    # third records stand, the second left, a fourth came.
    data = (
        "\ufeffnhs_number,date_of_birth,postcode\r\n" + f"{lines[2]}\r\n\r\n9990000026,,\r\n{lines[0]}\r\n"
    ).encode()
    found = Fingerprints(key, "patients").recognise(data, dict(known))
    assert found.kept == 2
    assert found.retiring == {12}
    assert found.rest == b"\xef\xbb\xbfnhs_number,date_of_birth,postcode\r\n\r\n9990000026,,\r\n"
    # Not one record a line (a quote, a lone carriage return): such a file is read whole.
    assert not fingerprints.one_record_a_line(b'nhs_number\n"9434765919"\n')
    assert not fingerprints.one_record_a_line(b"nhs_number\r9434765919\n")
    # A line written twice is recognised once: the second is read (and refused as a repeat).
    twice = f"nhs_number,date_of_birth,postcode\n{lines[0]}\n{lines[0]}\n".encode()
    known = dict(zip(parsed.fingerprints, (11, 12, 13), strict=True))
    found = Fingerprints(key, "patients").recognise(twice, known)
    assert found.kept == 1
    assert found.rest == f"nhs_number,date_of_birth,postcode\n{lines[0]}\n".encode()
    assert found.retiring == {12, 13}
