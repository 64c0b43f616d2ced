"""The CEF API's migrations go down and up again on both databases, and a downgrade that cannot
be done refuses before it changes anything."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from sqlmodel import Session

from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.main import MIGRATIONS
from cef_common import db
from cef_common.testing import DatabaseFactory


def _indexes(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes("invoice") if ix["name"]}
    finally:
        engine.dispose()


def test_every_migration_downgrades_and_upgrades_again(
    database_factory: DatabaseFactory, db_kind: str
) -> None:
    url = database_factory(db_kind, MIGRATIONS)
    config = db.alembic_config(MIGRATIONS, url)
    command.downgrade(config, "0003")
    command.upgrade(config, "head")
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == db.head_revision(MIGRATIONS)
    finally:
        engine.dispose()
    assert "uq_invoice_provider_idempotency" in _indexes(url)


def _invoice(number: str, status: InvoiceStatus) -> Invoice:
    return Invoice(
        id=str(uuid.uuid4()),
        invoice_number=number,
        provider_code="RTR",
        commissioner_code="00L",
        invoice_date=date(2019, 5, 3),
        period_start=date(2019, 4, 1),
        period_end=date(2019, 4, 30),
        status=status,
        submitted_at=datetime.now(UTC),
        submitted_by="tests",
        idempotency_key="key-1",
        request_hash="0" * 64,
        backing_bytes=1,
        background=False,
    )


def test_a_key_used_again_after_a_failure_refuses_the_0005_downgrade_untouched(
    database_factory: DatabaseFactory, db_kind: str
) -> None:
    url = database_factory(db_kind, MIGRATIONS)
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            session.add(_invoice("INV-1", InvoiceStatus.FAILED))
            session.add(_invoice("INV-2", InvoiceStatus.VALIDATED))
            session.commit()
        command.downgrade(db.alembic_config(MIGRATIONS, url), "0005")
        with pytest.raises(RuntimeError, match="used again after a failed submission"):
            command.downgrade(db.alembic_config(MIGRATIONS, url), "0004")
        assert db.current_revision(engine) == "0005"
    finally:
        engine.dispose()
    assert "uq_invoice_provider_idempotency" in _indexes(url)


@pytest.mark.parametrize("status", [InvoiceStatus.PART_PAID, InvoiceStatus.PAID, InvoiceStatus.WITHDRAWN])
def test_an_invoice_in_a_lifecycle_state_refuses_the_0006_downgrade_untouched(
    database_factory: DatabaseFactory, db_kind: str, status: str
) -> None:
    url = database_factory(db_kind, MIGRATIONS)
    engine = db.make_engine(url)
    try:
        with Session(engine) as session:
            session.add(_invoice("INV-1", status))
            session.commit()
        command.downgrade(db.alembic_config(MIGRATIONS, url), "0006")
        with pytest.raises(RuntimeError, match="cannot represent"):
            command.downgrade(db.alembic_config(MIGRATIONS, url), "0005")
        assert db.current_revision(engine) == "0006"
    finally:
        engine.dispose()
