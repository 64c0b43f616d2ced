"""Narrower line indexes: each index of invoice_line holds only the lines it is read for.

Storing a large invoice's lines is the costliest step of its validation, and a large part of that is
the indexes. `dup_key` is set only on lines that count for later duplicates, and is only ever
looked up by value, so lines without one need no entry. `line_ref` is looked up to decide a line,
and only query lines are decided, so only they need an entry (other lookups by `line_ref` read the
invoice's lines through its `line_no` index).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED = "dup_key IS NOT NULL"
QUERY_LINES = "outcome = 'query'"


def upgrade() -> None:
    op.drop_index("ix_invoice_line_dup_key", table_name="invoice_line")
    op.drop_index("ix_invoice_line_invoice_ref", table_name="invoice_line")
    op.create_index(
        "ix_invoice_line_counted_dup_key",
        "invoice_line",
        ["dup_key"],
        sqlite_where=sa.text(COUNTED),
        postgresql_where=sa.text(COUNTED),
    )
    op.create_index(
        "ix_invoice_line_query_ref",
        "invoice_line",
        ["invoice_seq", "line_ref"],
        sqlite_where=sa.text(QUERY_LINES),
        postgresql_where=sa.text(QUERY_LINES),
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_line_query_ref", table_name="invoice_line")
    op.drop_index("ix_invoice_line_counted_dup_key", table_name="invoice_line")
    op.create_index("ix_invoice_line_dup_key", "invoice_line", ["dup_key"])
    op.create_index("ix_invoice_line_invoice_ref", "invoice_line", ["invoice_seq", "line_ref"])
