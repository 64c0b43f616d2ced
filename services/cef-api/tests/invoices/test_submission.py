"""POST /v1/invoices: authorisation, what refuses a submission (nothing stored), 413, 409,
idempotency, and row problems becoming line outcomes rather than refusals."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, api_settings, running_api

HEADER = "line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount\n"


def _header(world: generate_world.World, **changes: Any) -> dict[str, Any]:
    return {**world.invoices[0].header, **changes}


def _invoices(api: Api) -> int:
    with api.app.state.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM invoice")).scalar_one())


def _lines(api: Api) -> int:
    with api.app.state.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM invoice_line")).scalar_one())


@pytest.fixture
async def loaded(sqlite_api: Api, world: generate_world.World) -> Api:
    await sqlite_api.load_world(world)
    return sqlite_api


async def test_submission_needs_a_token_the_scope_and_the_provider(
    loaded: Api, world: generate_world.World
) -> None:
    inv = world.invoices[0]
    files = {
        "invoice": ("i.json", generate_world.json_bytes(inv.header)),
        "backing_data": ("b.csv", inv.backing),
    }
    assert (await loaded.client.post("/v1/invoices", files=files)).status_code == 401
    r = await loaded.client.post("/v1/invoices", files=files, headers=loaded.h("invoices:read", org="RTR"))
    assert r.status_code == 403
    other = "RVW" if inv.header["provider_code"] != "RVW" else "RTR"
    r = await loaded.submit(inv.header, inv.backing, org=other)
    assert r.status_code == 403
    assert r.json()["code"] == "other-organisation"
    assert _invoices(loaded) == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"provider_code": "ZZZ"}, "provider_code"),
        ({"commissioner_code": "99Z"}, "commissioner_code"),
        ({"invoice_date": "2019-02-30"}, "invoice_date"),
        ({"period_start": "yesterday"}, "period_start"),
        ({"period_end": "2019-01-01", "period_start": "2019-02-01"}, "period_end"),
        ({"invoice_number": ""}, "invoice_number"),
    ],
)
async def test_header_errors_are_422_and_store_nothing(
    loaded: Api, world: generate_world.World, changes: dict[str, Any], field: str
) -> None:
    header = _header(world, **changes)
    r = await loaded.submit(header, world.invoices[0].backing, org=header["provider_code"])
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "invoice-header-invalid"
    assert field in problem["detail"] or any(field in e["field"] for e in problem.get("errors", []))
    assert _invoices(loaded) == 0


async def test_header_that_is_not_json(loaded: Api, world: generate_world.World) -> None:
    r = await loaded.submit(
        b"{not json", world.invoices[0].backing, org=world.invoices[0].header["provider_code"]
    )
    assert r.status_code == 422
    assert "JSON" in r.json()["detail"]


@pytest.mark.parametrize(
    ("backing", "says"),
    [
        (b"line_ref,nhs_number\n\xff\xfe,1\n", "UTF-8"),
        (b"", "header"),
        (
            b"line_ref,nhs_number,point_of_delivery,hrg_code,activity_date\n1,9434765919,EL,AA11A,2019-04-02\n",
            "amount",
        ),
        (
            (
                HEADER + "1,9434765919,EL,AA11A,2019-04-02,1.00\n1,9434765919,EL,AA11A,2019-04-03,1.00\n"
            ).encode(),
            "1",
        ),
    ],
)
async def test_file_errors_are_422_and_store_nothing(
    loaded: Api, world: generate_world.World, backing: bytes, says: str
) -> None:
    r = await loaded.submit(world.invoices[0].header, backing)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "backing-data-invalid"
    assert says in problem["detail"]
    assert _invoices(loaded) == 0
    assert _lines(loaded) == 0
    assert not list((loaded.settings.data_dir / "spool").glob("*"))


async def test_missing_parts_and_not_multipart(loaded: Api, world: generate_world.World) -> None:
    org = world.invoices[0].header["provider_code"]
    r = await loaded.client.post(
        "/v1/invoices", files={"invoice": ("i.json", b"{}")}, headers=loaded.h("invoices:submit", org=org)
    )
    assert r.status_code == 422
    assert "backing_data" in r.json()["detail"]
    r = await loaded.client.post("/v1/invoices", json={}, headers=loaded.h("invoices:submit", org=org))
    assert r.status_code == 422
    assert "multipart" in r.json()["detail"]


async def test_row_problems_become_line_outcomes(loaded: Api, world: generate_world.World) -> None:
    backing = (
        HEADER
        + '1,9434765919,EL,AA11A,2019-04-02,"£1,00"\n2,,XX,,,\n3,"943 476 5919",dc,ZZ99Z,2019-13-01,1\n'
    )
    r = await loaded.submit(world.invoices[0].header, backing.encode())
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["lines"] == 3
    lines = await loaded.lines(r.json()["id"], "invoices:submit", world.invoices[0].header["provider_code"])
    assert [(x["outcome"], x["reasons"]) for x in lines] == [("rejected", ["MALFORMED_LINE"])] * 3


async def test_over_the_size_limit_is_413(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    settings = api_settings(data_dir, sqlite_api_db, tokeniser.url, max_invoice_bytes=2048)
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        big = (HEADER + "".join(f"{i},9434765919,EL,AA11A,2019-04-02,1.00\n" for i in range(200))).encode()
        r = await api.submit(world.invoices[0].header, big)
        assert r.status_code == 413
        assert r.json()["code"] == "payload-too-large"
        assert "2048" in r.json()["detail"]
        assert _invoices(api) == 0


async def test_same_invoice_number_twice_is_409(loaded: Api, world: generate_world.World) -> None:
    inv = world.invoices[0]
    assert (await loaded.submit(inv.header, inv.backing)).status_code == 201
    r = await loaded.submit(inv.header, inv.backing)
    assert r.status_code == 409
    assert r.json()["code"] == "duplicate-invoice"
    assert _invoices(loaded) == 1


async def test_idempotency_key_returns_the_first_result(loaded: Api, world: generate_world.World) -> None:
    inv = world.invoices[0]
    first = await loaded.submit(inv.header, inv.backing, headers={"Idempotency-Key": "k-1"})
    again = await loaded.submit(inv.header, inv.backing, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _invoices(loaded) == 1
    other = await loaded.submit(
        _header(world, invoice_number="X-1"), inv.backing, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency-key-reused"


async def test_refusals_and_submissions_are_audited(loaded: Api, world: generate_world.World) -> None:
    inv = world.invoices[0]
    await loaded.submit(inv.header, b"")
    await loaded.submit(inv.header, inv.backing)
    with loaded.app.state.engine.connect() as conn:
        payloads = [p for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))]
    import json

    events = [json.loads(p) for p in payloads if '"invoice.' in p]
    assert [(e["type"], e["outcome"]) for e in events] == [
        ("invoice.submit", "failure"),
        ("invoice.submit", "success"),
        ("invoice.validate.start", "success"),
        ("invoice.validate", "success"),
    ]
    assert events[3]["detail"]["valid"] == int(generate_world.summary_of(inv)["valid"])


async def test_amounts_beyond_32_bit_pennies_are_stored_and_summed_exactly(
    api: Api, world: generate_world.World
) -> None:
    """Money is BIGINT pennies on both databases: an invoice of tens of millions of pounds (over
    2**31 pennies, £21,474,836.47) validates, and its lines, summary and decisions keep every penny."""
    await api.load_world(world)
    inv = world.invoices[0]
    rows = list(csv.reader(io.StringIO(inv.backing.decode("utf-8-sig"), newline="")))
    amount = rows[0].index(next(c for c in rows[0] if c.strip().lower() == "amount"))
    for n, row in enumerate(rows[1:]):
        if len(row) == len(rows[0]):
            row[amount] = f"{15_000_000 + n}.07"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    r = await api.submit(inv.header, out.getvalue().encode())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "validated"
    claimed = sum(Decimal(row[amount]) for row in rows[1:] if len(row) == len(rows[0]))
    assert Decimal(body["summary"]["claimed_amount"]) >= claimed > Decimal("21474836.47")
    lines = await api.lines(body["id"], "invoices:submit", inv.header["provider_code"])
    assert any(x["outcome"] == "query" for x in lines)


@pytest.mark.parametrize(
    ("amounts", "what"),
    [
        (["92233720368547758.08"], "the amount 92233720368547758.08 of a line"),
        (["92233720368547758.07", "0.01"], "the invoice's claimed total"),
    ],
    ids=["one-line", "the-total"],
)
async def test_an_amount_no_column_can_hold_fails_the_invoice_saying_so(
    api: Api, world: generate_world.World, amounts: list[str], what: str
) -> None:
    """The amount pattern bounds no digits; pennies are 64-bit. Beyond that the invoice fails
    cleanly — nothing kept, the problem naming the amount — rather than with a database error."""
    await api.load_world(world)
    inv = world.invoices[0]
    body = HEADER + "".join(
        f"L{n},9434765919,DC,HN12A,2019-07-10,{amount}\n" for n, amount in enumerate(amounts)
    )
    r = await api.submit(inv.header, body.encode())
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "amount-too-large"
    assert what in r.json()["detail"]
    assert "correct the amount" in r.json()["detail"]
    assert _lines(api) == 0
    with api.app.state.engine.connect() as conn:
        status, reason = conn.execute(sa.text("SELECT status, failure_reason FROM invoice")).one()
    assert status == "failed"
    assert what in reason


async def test_a_failed_invoice_frees_its_number_and_idempotency_key(
    loaded: Api, world: generate_world.World
) -> None:
    """A retry of a failed submission with its original key submits again (it does not replay the
    failure), and the number is free for it too; a key whose invoice stands still replays it."""
    inv = world.invoices[0]
    too_large = (HEADER + "L1,9434765919,DC,HN12A,2019-07-10,92233720368547758.08\n").encode()
    key = {"Idempotency-Key": "retry-me"}
    failed = await loaded.submit(inv.header, too_large, headers=key)
    assert failed.status_code == 422, failed.text
    again = await loaded.submit(inv.header, too_large, headers=key)
    assert again.status_code == 422, again.text
    assert "Idempotent-Replayed" not in again.headers
    fixed = await loaded.submit(inv.header, inv.backing, headers=key)
    assert fixed.status_code == 201, fixed.text
    assert fixed.json()["status"] == "validated"
    assert "Idempotent-Replayed" not in fixed.headers
    replay = await loaded.submit(inv.header, inv.backing, headers=key)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == fixed.json()["id"]
    with loaded.app.state.engine.connect() as conn:
        statuses = sorted(s for (s,) in conn.execute(sa.text("SELECT status FROM invoice")))
    assert statuses == ["failed", "failed", "validated"]


async def test_a_replay_of_an_invoice_still_being_validated_is_202(
    loaded: Api, world: generate_world.World
) -> None:
    """A retry that arrives while the first request's invoice is still validating is told so (202,
    as the first would be), not 201 with an invoice that has no outcomes yet."""
    inv = world.invoices[0]
    key = {"Idempotency-Key": "still-going"}
    first = await loaded.submit(inv.header, inv.backing, headers=key)
    assert first.status_code == 201, first.text
    with loaded.app.state.engine.begin() as conn:
        conn.execute(sa.text("UPDATE invoice SET status = 'validating'"))
    replay = await loaded.submit(inv.header, inv.backing, headers=key)
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["Location"] == f"/v1/invoices/{first.json()['id']}"
