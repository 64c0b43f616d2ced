"""The audit log: events, head (the sequencer's row), signed checkpoints; append-only triggers; the
PostgreSQL role the service runs as, without UPDATE or DELETE on the log.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64
APPEND_ONLY = ("audit_events", "audit_checkpoints")
WRITER_ROLE = "cef_audit_writer"


def upgrade() -> None:
    seq_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "audit_events",
        sa.Column("seq", seq_type, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("recorded_at", sa.String(27), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("actor_sub", sa.String(255), nullable=False),
        sa.Column("actor_org", sa.String(64), nullable=True),
        sa.Column("actor_client", sa.String(255), nullable=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("entity_type", sa.String(100), nullable=True),
        sa.Column("entity_id", sa.String(255), nullable=True),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
        sa.UniqueConstraint("event_id", name="uq_audit_events_event_id"),
    )
    op.create_index("ix_audit_events_recorded_at_seq", "audit_events", ["recorded_at", "seq"])
    op.create_index("ix_audit_events_actor_sub_seq", "audit_events", ["actor_sub", "seq"])
    op.create_index("ix_audit_events_actor_org_seq", "audit_events", ["actor_org", "seq"])
    op.create_index("ix_audit_events_type_seq", "audit_events", ["type", "seq"])
    op.create_index("ix_audit_events_entity_id_seq", "audit_events", ["entity_id", "seq"])
    op.create_index("ix_audit_events_outcome_seq", "audit_events", ["outcome", "seq"])

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(27), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    op.bulk_insert(head, [{"id": 1, "length": 0, "head_hash": GENESIS_HASH, "recorded_at": None}])

    op.create_table(
        "audit_checkpoints",
        sa.Column("length", seq_type, autoincrement=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.String(27), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("length", name="pk_audit_checkpoints"),
    )

    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guards()
    else:
        _sqlite_guards()


def _sqlite_guards() -> None:
    for table in APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} is refused'); END"
            )
    # The head moves forward only and is never removed.
    op.execute(
        "CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head WHEN NEW.length < OLD.length "
        "BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
        "BEGIN SELECT RAISE(ABORT, 'audit_head is never deleted'); END"
    )


def _postgresql_guards() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION cef_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION cef_audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' OR NEW.length < OLD.length THEN
                RAISE EXCEPTION 'audit_head only moves forward' USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION cef_audit_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION cef_audit_refuse_change()"
        )
    op.execute(
        "CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION cef_audit_head_forward_only()"
    )
    # Roles belong to the cluster, so another database may have created it already.
    op.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WRITER_ROLE}') THEN
                CREATE ROLE {WRITER_ROLE} NOLOGIN;
            END IF;
        END $$
        """
    )
    op.execute(f"GRANT SELECT, INSERT ON audit_events, audit_checkpoints TO {WRITER_ROLE}")
    op.execute(f"GRANT SELECT, UPDATE ON audit_head TO {WRITER_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version TO {WRITER_ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"REVOKE ALL ON audit_events, audit_checkpoints, audit_head FROM {WRITER_ROLE}")
        op.execute(f"REVOKE ALL ON alembic_version FROM {WRITER_ROLE}")
    for table in ("audit_checkpoints", "audit_head", "audit_events"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cef_audit_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS cef_audit_head_forward_only()")
