"""The narrow line indexes of migration 0003: the statements that read lines by `line_ref` or by
duplicate key can use them on both databases, and finding a line by its ref still finds every line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

from cef_api.invoices import repository
from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_common import db

pytestmark = pytest.mark.usefixtures("db_kind")


@pytest.fixture
def session(api_db: str) -> Iterator[Session]:
    engine = db.make_engine(api_db)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _invoice(session: Session) -> int:
    invoice = Invoice(
        id="8f1c1f3e-0000-4000-8000-000000000001",
        invoice_number="INV-1",
        provider_code="RTR",
        commissioner_code="16C",
        invoice_date=date(2026, 5, 1),
        period_start=date(2026, 4, 1),
        period_end=date(2026, 4, 30),
        status=InvoiceStatus.VALIDATED,
        submitted_at=datetime.now(UTC),
        submitted_by="test",
        request_hash="0" * 64,
        backing_bytes=1,
    )
    session.add(invoice)
    session.flush()
    assert invoice.seq is not None
    return invoice.seq


def _line(seq: int, line_no: int, line_ref: str, outcome: str, dup_key: str | None = None) -> tuple[Any, ...]:
    values = dict.fromkeys(repository.LINE_COLUMNS)
    values |= {
        "invoice_seq": seq,
        "line_no": line_no,
        "line_ref": line_ref,
        "outcome": outcome,
        "reasons": "",
        "dup_key": dup_key,
    }
    return tuple(values[c] for c in repository.LINE_COLUMNS)


def test_a_ref_finds_its_line_whatever_its_outcome(session: Session) -> None:
    seq = _invoice(session)
    repository.insert_lines(
        session,
        [
            _line(seq, 1, "A", "rejected"),
            _line(seq, 2, "B", "query"),
            _line(seq, 3, "C", "query"),
            _line(seq, 4, "D", "valid", dup_key="k4"),
        ],
    )

    def found(line_ref: str) -> tuple[int, str] | None:
        line = repository.line_by_ref(session, seq, line_ref)
        return (line.line_no, line.outcome) if line is not None else None

    assert found("B") == (2, "query")
    # Lines that are not query lines are found too (so the caller can say why they cannot be decided).
    assert found("A") == (1, "rejected")
    assert found("D") == (4, "valid")
    assert found("E") is None
    assert repository.pending_queries(session, seq) == 2
    assert repository.existing_dup_keys(session, ["k4", "k9"]) == {"k4"}


class _Statements:
    """The SQL and parameters a block of code sends, to ask the database how it would run them."""

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.sent: list[tuple[str, Any]] = []

    def __enter__(self) -> _Statements:
        event.listen(self.connection, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.connection, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        self.sent.append((statement, parameters))

    def plans(self) -> list[str]:
        cursor = self.connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        explain = "EXPLAIN QUERY PLAN " if self.connection.dialect.name == "sqlite" else "EXPLAIN "
        plans = []
        for statement, parameters in self.sent:
            cursor.execute(explain + statement, parameters)
            plans.append(" ".join(str(part) for row in cursor.fetchall() for part in row))
        return plans


def test_lookups_by_ref_and_by_duplicate_key_can_use_the_narrow_indexes(session: Session) -> None:
    seq = _invoice(session)
    repository.insert_lines(session, [_line(seq, 1, "A", "query"), _line(seq, 2, "B", "valid", dup_key="k2")])
    if session.connection().dialect.name == "postgresql":
        # Two rows: without this the planner rightly prefers reading the table.
        session.execute(sa.text("SET LOCAL enable_seqscan = off"))
    with _Statements(session) as by_ref:
        repository.line_by_ref(session, seq, "A")
    with _Statements(session) as pending:
        repository.pending_queries(session, seq)
    with _Statements(session) as by_key:
        repository.existing_dup_keys(session, ["k2", "k3"])
    assert "ix_invoice_line_query_ref" in by_ref.plans()[0]
    if session.connection().dialect.name == "postgresql":
        # SQLite's planner counts the partial index as no narrower than the line_no one for a count
        # over one invoice, and reads the invoice's lines, as it did before migration 0003.
        assert "ix_invoice_line_query_ref" in pending.plans()[0]
    assert "ix_invoice_line_counted_dup_key" in by_key.plans()[0]


def test_the_line_indexes_hold_only_the_lines_they_are_read_for(session: Session) -> None:
    """Lines that are not query lines, or hold no duplicate key, cost no index entry: the indexes
    are partial, and the wide ones of migration 0002 are gone."""
    indexes = {index["name"]: index for index in sa.inspect(session.connection()).get_indexes("invoice_line")}
    assert set(indexes) == {
        "uq_invoice_line_invoice_line_no",
        "ix_invoice_line_counted_dup_key",
        "ix_invoice_line_query_ref",
    }
    dialect = session.connection().dialect.name
    where = {
        name: str(indexes[name].get("dialect_options", {}).get(f"{dialect}_where", "")).lower()
        for name in ("ix_invoice_line_counted_dup_key", "ix_invoice_line_query_ref")
    }
    assert "dup_key is not null" in where["ix_invoice_line_counted_dup_key"]
    assert "query" in where["ix_invoice_line_query_ref"]
