"""reference data, invoices and line outcomes

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


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "reference_version",
        _id(),
        sa.Column("dataset", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("dob_key_version", sa.Integer(), nullable=True),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("dataset", "version", name="uq_reference_version_dataset"),
    )
    op.create_table(
        "ref_gp_practice",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("gp_practice_code", sa.String(12), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=True),
        sa.Column("status", sa.String(4), nullable=False),
    )
    op.create_index("ix_ref_gp_practice_version_code", "ref_gp_practice", ["version", "gp_practice_code"])
    op.create_table(
        "ref_patient",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("nhs_token", sa.String(128), nullable=False),
        sa.Column("dob_token", sa.String(128), nullable=True),
        sa.Column("outward_code", sa.String(8), nullable=True),
    )
    op.create_index("ix_ref_patient_version_token", "ref_patient", ["version", "nhs_token"])
    op.create_table(
        "ref_registration",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("nhs_token", sa.String(128), nullable=False),
        sa.Column("gp_practice_code", sa.String(12), nullable=False),
        sa.Column("registered_from", sa.Date(), nullable=False),
        sa.Column("registered_to", sa.Date(), nullable=True),
    )
    op.create_index("ix_ref_registration_version_token", "ref_registration", ["version", "nhs_token"])
    op.create_table(
        "ref_postcode_district",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("postcode_district", sa.String(8), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
    )
    op.create_index("ix_ref_postcode_district_version", "ref_postcode_district", ["version"])
    op.create_table(
        "ref_tariff",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hrg_code", sa.String(12), nullable=False),
        sa.Column("hrg_name", sa.String(300), nullable=False),
        sa.Column("point_of_delivery", sa.String(8), nullable=False),
        sa.Column("price", sa.String(20), nullable=False),
        sa.Column("trim_point_days", sa.Integer(), nullable=False),
        sa.Column("excess_bed_day_price", sa.String(20), nullable=False),
    )
    op.create_index("ix_ref_tariff_version", "ref_tariff", ["version"])
    op.create_table(
        "ref_provider",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("provider_code", sa.String(12), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("market_forces_factor", sa.String(20), nullable=False),
    )
    op.create_index("ix_ref_provider_version", "ref_provider", ["version"])
    op.create_table(
        "ref_specialised_service",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("service_code", sa.String(20), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
    )
    op.create_index("ix_ref_specialised_service_version", "ref_specialised_service", ["version"])

    op.create_table(
        "invoice",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("invoice_number", sa.String(64), nullable=False),
        sa.Column("provider_code", sa.String(12), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
        sa.Column("invoice_date", sa.Date(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("backing_bytes", sa.BigInteger(), nullable=False),
        sa.Column("background", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("lines_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lines", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("valid", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("query", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("claimed_pennies", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("validated_pennies", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("approved_pennies", sa.BigInteger(), nullable=True),
        sa.Column("reference_versions", sa.String(2000), nullable=False, server_default="{}"),
        sa.Column("failure_reason", sa.String(1000), nullable=True),
        sa.Column("validated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
    )
    # A failed invoice does not hold its number: the provider resubmits it.
    op.create_index(
        "uq_invoice_provider_number",
        "invoice",
        ["provider_code", "invoice_number"],
        unique=True,
        sqlite_where=sa.text("status <> 'failed'"),
        postgresql_where=sa.text("status <> 'failed'"),
    )
    op.create_index(
        "uq_invoice_provider_idempotency", "invoice", ["provider_code", "idempotency_key"], unique=True
    )
    op.create_index("ix_invoice_commissioner_status", "invoice", ["commissioner_code", "status"])
    op.create_index("ix_invoice_provider_commissioner", "invoice", ["provider_code", "commissioner_code", "status"])

    op.create_table(
        "invoice_line",
        _id(),
        sa.Column("invoice_seq", sa.Integer(), sa.ForeignKey("invoice.seq"), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("line_ref", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("reasons", sa.String(400), nullable=False, server_default=""),
        sa.Column("responsible_commissioner", sa.String(12), nullable=True),
        sa.Column("expected_pennies", sa.BigInteger(), nullable=True),
        sa.Column("claimed_pennies", sa.BigInteger(), nullable=True),
        sa.Column("nhs_token", sa.String(128), nullable=True),
        sa.Column("activity_date", sa.Date(), nullable=True),
        sa.Column("hrg_code", sa.String(12), nullable=True),
        sa.Column("point_of_delivery", sa.String(8), nullable=True),
        sa.Column("service_code", sa.String(20), nullable=True),
        sa.Column("dup_key", sa.String(64), nullable=True),
        sa.Column("decision", sa.String(10), nullable=True),
        sa.Column("decided_pennies", sa.BigInteger(), nullable=True),
        sa.Column("decision_reason", sa.String(1000), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("uq_invoice_line_invoice_line_no", "invoice_line", ["invoice_seq", "line_no"], unique=True)
    op.create_index("ix_invoice_line_dup_key", "invoice_line", ["dup_key"])
    op.create_index("ix_invoice_line_invoice_ref", "invoice_line", ["invoice_seq", "line_ref"])


def downgrade() -> None:
    op.drop_table("invoice_line")
    op.drop_table("invoice")
    for table in (
        "ref_specialised_service",
        "ref_provider",
        "ref_tariff",
        "ref_postcode_district",
        "ref_registration",
        "ref_patient",
        "ref_gp_practice",
        "reference_version",
    ):
        op.drop_table(table)
