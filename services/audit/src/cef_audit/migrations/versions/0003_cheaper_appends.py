"""Cheaper appends: no recorded_at index (time bounds are found by binary search over seq), and the
outcome index only over the outcomes worth an index (everything but success).

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

RARE_OUTCOMES = "outcome <> 'success'"


def upgrade() -> None:
    op.drop_index("ix_audit_events_recorded_at_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_outcome_seq", table_name="audit_events")
    op.create_index(
        "ix_audit_events_rare_outcome_seq",
        "audit_events",
        ["outcome", "seq"],
        sqlite_where=sa.text(RARE_OUTCOMES),
        postgresql_where=sa.text(RARE_OUTCOMES),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_rare_outcome_seq", table_name="audit_events")
    op.create_index("ix_audit_events_outcome_seq", "audit_events", ["outcome", "seq"])
    op.create_index("ix_audit_events_recorded_at_seq", "audit_events", ["recorded_at", "seq"])
