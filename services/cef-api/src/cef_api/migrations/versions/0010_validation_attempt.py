"""The validation attempt of an invoice: the fence against a worker that outlived its job.

`invoice.attempt` counts the validation attempts an invoice has had: a claim makes it 1, and each
restart of a stalled job adds one in the same transaction that deletes the broken attempt's lines.
Every write of an attempt is a conditional update of the invoice row on its own number, so a worker
that was thought dead (a long pause, a frozen VM) and resumes after its job was restarted elsewhere
writes nothing (docs/queue.md, "Crash recovery"). Invoices already finished keep 0.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("invoice", sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("invoice") as batch:
        batch.drop_column("attempt")
