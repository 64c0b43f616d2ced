"""The staff work queue: query lines of validated invoices addressed to the caller's commissioner,
oldest invoice first, its filters and paging, one audit event per page, and no patient token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session
from workflow_support import COMMISSIONER, Desk

from cef_api.invoices.models import ChallengeStatus, Invoice, InvoiceStatus, QueryState
from cef_api.invoices.repository import LINE_COLUMNS, insert_lines
from cef_api.validation.rules.outcome import QUERYING
from cef_api.workflow import repository
from cef_api.workflow.schemas import ChallengeStatusName, QueryReasonCode, QueryStateName
from cef_common import db

ITEM_FIELDS = {
    "invoice_id",
    "invoice_number",
    "provider_code",
    "line_ref",
    "line_no",
    "state",
    "reasons",
    "expected_amount",
    "claimed_amount",
    "activity_date",
    "hrg_code",
    "point_of_delivery",
    "submitted_at",
    "age_days",
    "challenge",
}


def test_the_api_names_every_state_status_and_query_reason_of_the_domain() -> None:
    from typing import get_args

    assert set(get_args(QueryStateName)) == set(QueryState.ALL)
    assert set(get_args(ChallengeStatusName)) == set(ChallengeStatus.ALL)
    assert set(get_args(QueryReasonCode)) == {r.value for r in QUERYING}


async def _all_query_lines(desk: Desk) -> list[tuple[str, int, list[str]]]:
    out = []
    for index in range(len(desk.invoices)):
        out += [(desk.id(index), x["line_no"], x["reasons"]) for x in await desk.query_lines(index)]
    return out


async def test_the_queue_lists_undecided_query_lines_oldest_invoice_first_without_tokens(desk: Desk) -> None:
    expected = await _all_query_lines(desk)
    items = await desk.queue(limit=5000)
    assert [(x["invoice_id"], x["line_no"]) for x in items] == [(i, n) for i, n, _ in expected]
    assert all(set(x) == ITEM_FIELDS for x in items)
    assert "patient_token" not in str(items)
    assert {x["state"] for x in items} == {"query"}
    assert all(x["age_days"] == 0 and x["challenge"] is None for x in items)
    # Paging gives the same lines in the same order; each page read is one audit event.
    before = len(desk.events("invoice.queries.read"))
    paged = await desk.queue(limit=7)
    assert paged == items
    pages = desk.events("invoice.queries.read")[before:]
    assert len(pages) == -(-len(items) // 7)
    assert sum(e["entity"]["count"] for e in pages) == len(items)
    assert {e["detail"]["commissioner_code"] for e in pages} == {COMMISSIONER}
    for bad in ("1", "1.x", "-1.2", "1.2.3", "99999999999.1"):
        r = await desk.client.get("/v1/queries", params={"cursor": bad}, headers=desk.staff())
        assert (r.status_code, r.json()["code"]) == (400, "bad-cursor"), bad


async def test_the_state_filter_and_the_latest_challenge(desk: Desk) -> None:
    lines = await desk.query_lines(0)
    challenged, answered, decided = (x["line_ref"] for x in lines[:3])
    first = (await desk.challenge(challenged)).json()
    second = (await desk.challenge(answered)).json()
    assert (await desk.respond(second["id"])).status_code == 200
    await desk.decide(decided, {"decision": "reject", "reason": "not a service we commission"})
    mine = {x["line_ref"]: x for x in await desk.queue(invoice_id=desk.id(0))}
    assert decided not in mine
    assert mine[challenged]["state"] == "challenged"
    assert mine[challenged]["challenge"] == {
        "id": first["id"],
        "status": "open",
        "due_date": first["due_date"],
        "overdue": False,
    }
    assert (mine[answered]["state"], mine[answered]["challenge"]["status"]) == ("responded", "responded")
    for state, refs in (("challenged", [challenged]), ("responded", [answered]), ("rejected", [decided])):
        assert [x["line_ref"] for x in await desk.queue(state=state)] == refs, state
    rejected = (await desk.queue(state="rejected"))[0]
    assert rejected["challenge"] is None
    r = await desk.client.get("/v1/queries", params={"state": "approved"}, headers=desk.staff())
    assert r.status_code == 422


async def test_the_reason_filter_matches_whole_codes_only(desk: Desk) -> None:
    lines = await desk.query_lines(0)
    # Lines carrying several codes, and codes that contain another's letters: a whole code matches
    # wherever it stands among the line's codes, a longer code or a look-alike never does.
    crafted = {
        lines[0]["line_ref"]: "DOB_MISMATCH;PRICE_MISMATCH",
        lines[1]["line_ref"]: "PRICE_MISMATCH;TARIFF_NOT_FOUND",
        lines[2]["line_ref"]: "PRICEXMISMATCH",
        lines[3]["line_ref"]: "DOB_MISMATCH;XPRICE_MISMATCH",
        lines[4]["line_ref"]: "PRICE_MISMATCH_2",
    }
    for ref, reasons in crafted.items():
        desk.sql(
            "UPDATE invoice_line SET reasons = :r WHERE line_ref = :ref AND invoice_seq = "
            "(SELECT seq FROM invoice WHERE id = :id)",
            r=reasons,
            ref=ref,
            id=desk.id(0),
        )
    truth = await _all_query_lines(desk)
    for code in sorted(r.value for r in QUERYING):
        got = [(x["invoice_id"], x["line_no"]) for x in await desk.queue(reason=code)]
        assert got == [(i, n) for i, n, reasons in truth if code in reasons], code
    r = await desk.client.get("/v1/queries", params={"reason": "NHS_NUMBER_INVALID"}, headers=desk.staff())
    assert r.status_code == 422
    page = (
        await desk.client.get("/v1/queries", params={"reason": "PATIENT_NOT_FOUND"}, headers=desk.staff())
    ).json()
    assert {x["code"] for x in page["reasons_explained"]} == {c for x in page["items"] for c in x["reasons"]}


async def test_provider_and_invoice_filters_and_who_may_read_the_queue(desk: Desk) -> None:
    everything = await desk.queue()
    rvw = await desk.queue(provider_code="rvw")
    assert rvw == [x for x in everything if x["provider_code"] == "RVW"]
    assert rvw
    assert await desk.queue(invoice_id=desk.id(2)) == [x for x in everything if x["invoice_id"] == desk.id(2)]
    assert await desk.queue(invoice_id="not-an-invoice") == []
    assert await desk.queue(provider_code="ZZZ") == []
    assert await desk.queue(headers=desk.staff(org="00K")) == []
    r = await desk.client.get("/v1/queries", params={"provider_code": "LS1 4AP"}, headers=desk.staff())
    assert r.status_code == 422
    for scope, org in (("invoices:submit", "RTR"), ("invoices:read", COMMISSIONER)):
        r = await desk.client.get("/v1/queries", headers=desk.api.h(scope, org=org))
        assert r.status_code == 403, scope
    # A filter value shaped like an identifier is never recorded as it was typed.
    await desk.queue(provider_code="SW1A1AA")
    last = desk.events("invoice.queries.read")[-1]
    assert last["detail"]["provider_code"] != "SW1A1AA"
    assert "digest" in last["detail"]["provider_code"]


async def test_an_approved_or_withdrawn_invoice_leaves_the_queue(desk: Desk) -> None:
    for code in sorted(r.value for r in QUERYING):
        r = await desk.bulk({"reason_code": code, "decision": "accept"}, 0)
        assert r.status_code == 200, r.text
    assert len(await desk.queue(state="accepted")) == len(await desk.query_lines(0))
    r = await desk.client.post(f"/v1/invoices/{desk.id(0)}/approve", headers=desk.staff())
    assert r.status_code == 200, r.text
    r = await desk.client.post(f"/v1/invoices/{desk.id(1)}/withdraw", json={}, headers=desk.provider(1))
    assert r.status_code == 200, r.text
    assert await desk.queue(state="accepted") == []
    assert {x["invoice_id"] for x in await desk.queue()} == {desk.id(2)}


# --- the statement and the index it reads ------------------------------------------------------------


@pytest.fixture
def session(api_db: str) -> Iterator[Session]:
    engine = db.make_engine(api_db)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _line(seq: int, line_no: int, outcome: str) -> tuple[object, ...]:
    values = dict.fromkeys(LINE_COLUMNS) | {
        "invoice_seq": seq,
        "line_no": line_no,
        "line_ref": f"L{line_no}",
        "outcome": outcome,
        "reasons": "PRICE_MISMATCH" if outcome == "query" else "",
    }
    return tuple(values[c] for c in LINE_COLUMNS)


def test_the_queue_reads_an_invoice_s_lines_through_an_index_in_line_order(session: Session) -> None:
    for n, status in enumerate((InvoiceStatus.APPROVED, InvoiceStatus.VALIDATED)):
        invoice = Invoice(
            id=f"8f1c1f3e-0000-4000-8000-00000000000{n}",
            invoice_number=f"INV-{n}",
            provider_code="RTR",
            commissioner_code=COMMISSIONER,
            invoice_date=date(2026, 5, 1),
            period_start=date(2026, 4, 1),
            period_end=date(2026, 4, 30),
            status=status,
            submitted_at=datetime.now(UTC),
            submitted_by="test",
            request_hash="0" * 64,
            backing_bytes=1,
        )
        session.add(invoice)
        session.flush()
        assert invoice.seq is not None
        # Mostly valid lines, as in real invoices: the index over query lines is the narrow one.
        insert_lines(
            session, [_line(invoice.seq, i, "query" if i % 20 == 1 else "valid") for i in range(1, 4001)]
        )
    session.execute(sa.text("ANALYZE"))
    sent: list[tuple[str, object]] = []
    connection = session.connection()

    def record(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        sent.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", record)
    rows = repository.page_queue(
        session,
        commissioner_code=COMMISSIONER,
        states=list(QueryState.UNDECIDED),
        reason_code="PRICE_MISMATCH",
        provider_code=None,
        invoice_id=None,
        after=None,
        limit=10,
    )
    event.remove(connection, "before_cursor_execute", record)
    assert [r.line.line_no for r in rows] == list(range(1, 200, 20))
    assert {r.invoice_number for r in rows} == {"INV-1"}
    postgres = connection.dialect.name == "postgresql"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
    line_statements = [(st, p) for st, p in sent if "FROM invoice_line" in st]
    assert len(line_statements) == 1  # the approved invoice's lines are not even looked at
    ((statement, parameters),) = line_statements
    # `outcome = 'query'` is in the SQL itself, so the partial indexes over query lines apply.
    assert "outcome = 'query'" in statement

    def plan() -> str:
        cursor.execute(explain + statement, parameters)
        return " ".join(str(part) for row in cursor.fetchall() for part in row)

    # Read through an index of the invoice's lines, never the whole table. Which one is the
    # planner's choice from its estimates (with a reason filter it may gather the invoice's query
    # lines and sort them); the statement is a walk along (invoice_seq, line_no), which, with sorting
    # made dear, it takes: the invoice's lines in line order, no sort, stopping when the page is full.
    assert "SCAN invoice_line" not in plan()
    assert "Seq Scan on invoice_line" not in plan()
    if postgres:
        session.execute(sa.text("SET LOCAL enable_sort = off"))
        session.execute(sa.text("SET LOCAL enable_bitmapscan = off"))
        walked = plan()
        assert "uq_invoice_line_invoice_line_no" in walked, walked
        assert "Sort" not in walked, walked
