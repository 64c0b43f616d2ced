"""Re-identification tied to the work: the line keeps its date-of-birth and postcode tokens, and every
re-identification is counted per person in a table of its own.

A line kept only its NHS-number token, so its patient's date of birth and postcode as the provider
sent them could not be given back to the commissioner's staff resolving a query on it. Both tokens are
nullable: lines validated before this migration (and lines whose values were not valid) have none.
`reidentification` is the durable count behind the per-person daily limit, written in the same
transaction as the re-identification's audit event.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (SQLite 3.35+ drops columns too): a batch copy of the
    # table would have to carry its partial indexes (0003) across.
    op.add_column("invoice_line", sa.Column("dob_token", sa.String(128), nullable=True))
    op.add_column("invoice_line", sa.Column("postcode_token", sa.String(128), nullable=True))
    op.create_table(
        "reidentification",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("invoice_seq", sa.Integer(), sa.ForeignKey("invoice.seq"), nullable=False),
        sa.Column("line_ref", sa.String(100), nullable=False),
        sa.Column("person_sub", sa.String(255), nullable=False),
        sa.Column("person_issuer", sa.String(255), nullable=False),
        sa.Column("org", sa.String(12), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_reidentification_person_at", "reidentification", ["person_issuer", "person_sub", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_reidentification_person_at", table_name="reidentification")
    op.drop_table("reidentification")
    op.drop_column("invoice_line", "postcode_token")
    op.drop_column("invoice_line", "dob_token")
