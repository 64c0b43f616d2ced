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


def _reference_rows(engine: sa.Engine) -> list[tuple[int, str, int | None]]:
    with engine.connect() as conn:
        return sorted(
            tuple(r)  # type: ignore[misc]
            for r in conn.execute(sa.text("SELECT version, nhs_token, retired_in FROM ref_patient"))
        )


def test_0011_turns_copies_per_version_into_shared_rows_and_back(
    database_factory: DatabaseFactory, db_kind: str
) -> None:
    url = database_factory(db_kind, MIGRATIONS)
    config = db.alembic_config(MIGRATIONS, url)
    command.downgrade(config, "0010")
    engine = db.make_engine(url)
    try:
        # Two versions of the trace as 0010 held them: a whole copy each.
        with engine.begin() as conn:
            for version in (1, 2):
                conn.execute(
                    sa.text(
                        "INSERT INTO reference_version (dataset, version, rows, loaded_at, loaded_by) "
                        "VALUES ('patients', :v, 2, :at, 'tests')"
                    ),
                    {"v": version, "at": datetime.now(UTC)},
                )
            for version, token in ((1, "N1.a"), (1, "N1.b"), (2, "N1.a"), (2, "N1.c")):
                conn.execute(
                    sa.text("INSERT INTO ref_patient (version, nhs_token) VALUES (:v, :t)"),
                    {"v": version, "t": token},
                )
        command.upgrade(config, "head")
        # Version 1's copy is in force at version 1 only; version 2's is in force.
        assert _reference_rows(engine) == [
            (1, "N1.a", 2),
            (1, "N1.b", 2),
            (2, "N1.a", None),
            (2, "N1.c", None),
        ]
        with Session(engine) as session:
            from cef_api.reference import repository

            def tokens(version: int) -> list[str]:
                return sorted(
                    r.nhs_token for r in repository.all_rows(session, "patients", version, ["nhs_token"])
                )

            assert tokens(1) == ["N1.a", "N1.b"]
            assert tokens(2) == ["N1.a", "N1.c"]
        # Two versions kept: they cannot be copies per version again, and nothing is changed.
        with pytest.raises(RuntimeError, match="keep superseded versions"):
            command.downgrade(config, "0010")
        assert db.current_revision(engine) == "0011"
        # Once version 1 is gone, the rows in force become version 2's copy.
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM ref_patient WHERE retired_in IS NOT NULL"))
            conn.execute(sa.text("DELETE FROM reference_version WHERE version = 1"))
        command.downgrade(config, "0010")
        with engine.connect() as conn:
            rows = sorted(
                tuple(r) for r in conn.execute(sa.text("SELECT version, nhs_token FROM ref_patient"))
            )
        assert rows == [(2, "N1.a"), (2, "N1.c")]
        command.upgrade(config, "head")
        assert db.current_revision(engine) == db.head_revision(MIGRATIONS)
    finally:
        engine.dispose()
