"""initial

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

from alembic import op

from cef_common.audit import outbox_table_ddl

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("audit_outbox", *outbox_table_ddl())


def downgrade() -> None:
    op.drop_table("audit_outbox")
