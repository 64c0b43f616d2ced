"""The invoice lifecycle after validation: withdrawal, query-line states, challenges to the provider,
payments and the ledger reference.

`invoice_line.query_state` is written only once a query line moves (validation writes none, so the
bulk insert of a million lines is unchanged): NULL on a query line reads as `query`. Query lines
decided before this migration take the state of their decision. The staff work queue reads query
lines invoice by invoice in line order through the existing (invoice_seq, line_no) index.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def upgrade() -> None:
    op.add_column("invoice", sa.Column("paid_pennies", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("invoice", sa.Column("ledger_reference", sa.String(40), nullable=True))
    op.add_column("invoice", sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("invoice", sa.Column("withdrawn_by", sa.String(200), nullable=True))
    op.add_column("invoice", sa.Column("withdraw_reason", sa.String(500), nullable=True))
    op.create_index("uq_invoice_ledger_reference", "invoice", ["ledger_reference"], unique=True)

    op.add_column("invoice_line", sa.Column("query_state", sa.String(12), nullable=True))
    op.execute(
        "UPDATE invoice_line SET query_state = CASE decision WHEN 'accept' THEN 'accepted' "
        "ELSE 'rejected' END WHERE outcome = 'query' AND decision IS NOT NULL"
    )

    op.create_table(
        "challenge",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("invoice_seq", sa.Integer(), sa.ForeignKey("invoice.seq"), nullable=False),
        sa.Column("line_id", sa.Integer(), sa.ForeignKey("invoice_line.id"), nullable=False),
        sa.Column("line_ref", sa.String(100), nullable=False),
        sa.Column("provider_code", sa.String(12), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("message", sa.String(2000), nullable=False),
        sa.Column("raised_by", sa.String(200), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("response_message", sa.String(2000), nullable=True),
        sa.Column("corrected_pennies", sa.BigInteger(), nullable=True),
        sa.Column("responded_by", sa.String(200), nullable=True),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_challenge_invoice", "challenge", ["invoice_seq"])
    op.create_index("ix_challenge_line", "challenge", ["line_id"])
    op.create_index("ix_challenge_provider", "challenge", ["provider_code", "status", "due_date"])
    op.create_index("ix_challenge_commissioner", "challenge", ["commissioner_code", "status", "due_date"])

    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("invoice_seq", sa.Integer(), sa.ForeignKey("invoice.seq"), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("amount_pennies", sa.BigInteger(), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("uq_payment_invoice_reference", "payment", ["invoice_seq", "reference"], unique=True)


def downgrade() -> None:
    # Refused before anything changes while an invoice holds a status the older code does not know.
    later = op.get_bind().execute(
        sa.text("SELECT count(*) FROM invoice WHERE status IN ('part-paid', 'paid', 'withdrawn')")
    ).scalar_one()
    if later:
        raise RuntimeError(
            f"{later} invoice(s) are part-paid, paid or withdrawn, which revision 0005 cannot represent; "
            "the downgrade changed nothing"
        )
    op.drop_index("uq_payment_invoice_reference", table_name="payment")
    op.drop_table("payment")
    for name in ("ix_challenge_commissioner", "ix_challenge_provider", "ix_challenge_line", "ix_challenge_invoice"):
        op.drop_index(name, table_name="challenge")
    op.drop_table("challenge")
    op.drop_column("invoice_line", "query_state")
    op.drop_index("uq_invoice_ledger_reference", table_name="invoice")
    for column in ("withdraw_reason", "withdrawn_by", "withdrawn_at", "ledger_reference", "paid_pennies"):
        op.drop_column("invoice", column)
