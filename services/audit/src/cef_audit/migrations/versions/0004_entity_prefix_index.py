"""An index PostgreSQL can use for an invoice's history: events whose entity id starts with the
invoice id and a slash (its lines, challenges and payments).

The entity_id index uses the database's collation, under which PostgreSQL cannot read a `LIKE
'prefix%'` from it (unless the collation is C). `text_pattern_ops` compares byte by byte, which a
prefix match can use whatever the collation. SQLite's history query is a range over the existing
index, so it needs nothing.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_audit_events_entity_id_pattern_seq "
            "ON audit_events (entity_id text_pattern_ops, seq)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_audit_events_entity_id_pattern_seq")
