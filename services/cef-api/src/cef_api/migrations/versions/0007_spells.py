"""Spells for the pathway checks (14, 15).

`invoice_spell` is the look-back index of checks 14 and 15: one row per stored line that is a spell
with at least one night (EL/NEL, discharge after admission) and whose outcome was not rejected,
keyed by its line and read by (commissioner_code, nhs_token): a batch of lines looks up its
patients' earlier spells, never scanning earlier invoices. Validation fills it as it stores lines;
failing or withdrawing an invoice, and the retention purge, delete its rows.

Lines stored before this revision have no discharge date kept, so their spells cannot be rebuilt:
they are not earlier spells for the invoices validated after it (duplicates are unaffected).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_spell",
        sa.Column("invoice_seq", sa.Integer(), sa.ForeignKey("invoice.seq"), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
        sa.Column("nhs_token", sa.String(128), nullable=False),
        sa.Column("admission", sa.Date(), nullable=False),
        sa.Column("discharge", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("invoice_seq", "line_no", name="pk_invoice_spell"),
    )
    op.create_index("ix_invoice_spell_patient", "invoice_spell", ["commissioner_code", "nhs_token"])


def downgrade() -> None:
    op.drop_index("ix_invoice_spell_patient", table_name="invoice_spell")
    op.drop_table("invoice_spell")
