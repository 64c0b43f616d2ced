"""The durable validation queue: backing data held for a job, envelope-encrypted, and (on
PostgreSQL) procrastinate's own schema.

`queue_backing` holds one row per invoice waiting for (or in) a background validation: its data key,
random per invoice, wrapped by the key-encryption key of the settings (`kek_id` names which), and
the crash restarts counted so far. `queue_backing_chunk` holds the backing data in AES-GCM sealed
chunks under that data key. Both rows go when the job ends.

procrastinate's schema is the one of the installed procrastinate (3.10), applied here so every
node of a deployment finds it made by the same migration step as the rest of the database.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Everything procrastinate 3.10's schema.sql creates, in an order that can be dropped.
PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)
PROCRASTINATE_TYPES = (
    "procrastinate_job_to_defer_v1",
    "procrastinate_job_event_type",
    "procrastinate_job_status",
)


def upgrade() -> None:
    op.create_table(
        "queue_backing",
        sa.Column(
            "invoice_seq", sa.Integer(), sa.ForeignKey("invoice.seq", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("kek_id", sa.String(32), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "queue_backing_chunk",
        sa.Column(
            "invoice_seq",
            sa.Integer(),
            sa.ForeignKey("queue_backing.invoice_seq", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from procrastinate.schema import SchemaManager

        # Straight to the driver: the schema's PL/pgSQL holds '%' that parameter styles would read.
        raw = bind.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.execute(SchemaManager.get_schema())
        finally:
            cursor.close()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in PROCRASTINATE_TABLES:
            op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        op.execute(
            "DO $$ DECLARE f record; BEGIN FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema() "
            "AND p.proname LIKE 'procrastinate\\_%' LOOP EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE'; "
            "END LOOP; END $$"
        )
        for type_name in PROCRASTINATE_TYPES:
            op.execute(f"DROP TYPE IF EXISTS {type_name} CASCADE")
    op.drop_table("queue_backing_chunk")
    op.drop_table("queue_backing")
