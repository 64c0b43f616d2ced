"""A failed invoice frees its Idempotency-Key, as it already frees its invoice number.

The key's unique index held every invoice, so a retry of a failed submission with its original key
found the failure and replayed it for ever. Now the index holds only invoices that did not fail:
retrying with the key submits again. The downgrade restores the full index, and refuses, before
changing anything, when a key was since used again after a failure.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_FAILED = "status <> 'failed'"


def upgrade() -> None:
    op.drop_index("uq_invoice_provider_idempotency", table_name="invoice")
    op.create_index(
        "uq_invoice_provider_idempotency",
        "invoice",
        ["provider_code", "idempotency_key"],
        unique=True,
        sqlite_where=sa.text(NOT_FAILED),
        postgresql_where=sa.text(NOT_FAILED),
    )


def downgrade() -> None:
    # Checked before anything is dropped: SQLite runs each statement of a migration on its own, so a
    # failed index build after the drop would leave the table with no index on the key at all.
    reused = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM (SELECT provider_code, idempotency_key FROM invoice "
                "WHERE idempotency_key IS NOT NULL GROUP BY provider_code, idempotency_key "
                "HAVING count(*) > 1) AS reused"
            )
        )
        .scalar_one()
    )
    if reused:
        raise RuntimeError(
            f"{reused} Idempotency-Key(s) were used again after a failed submission; the full unique "
            "index cannot be restored while both invoices exist"
        )
    op.drop_index("uq_invoice_provider_idempotency", table_name="invoice")
    op.create_index(
        "uq_invoice_provider_idempotency", "invoice", ["provider_code", "idempotency_key"], unique=True
    )
