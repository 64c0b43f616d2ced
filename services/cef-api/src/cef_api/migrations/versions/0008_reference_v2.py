"""The v2 reference datasets: originating commissioners, devolved districts, contracts, prior approvals.

Each is versioned like the datasets of 0002 (rows carry their dataset's version); NHS numbers are
held as tokens. Validation reads each of them whole, once per job, by version.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "ref_originating_commissioner",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("nhs_token", sa.String(128), nullable=False),
        sa.Column("care_basis", sa.String(8), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
    )
    op.create_index(
        "ix_ref_originating_commissioner_version_token",
        "ref_originating_commissioner",
        ["version", "nhs_token"],
    )
    op.create_table(
        "ref_devolved_district",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("postcode_district", sa.String(8), nullable=False),
        sa.Column("nation", sa.String(2), nullable=False),
    )
    op.create_index("ix_ref_devolved_district_version", "ref_devolved_district", ["version"])
    op.create_table(
        "ref_contract",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
        sa.Column("provider_code", sa.String(12), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
    )
    op.create_index("ix_ref_contract_version", "ref_contract", ["version"])
    op.create_table(
        "ref_prior_approval",
        _id(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("commissioner_code", sa.String(12), nullable=False),
        sa.Column("reference", sa.String(40), nullable=False),
        sa.Column("nhs_token", sa.String(128), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=False),
    )
    op.create_index("ix_ref_prior_approval_version_token", "ref_prior_approval", ["version", "nhs_token"])


def downgrade() -> None:
    op.drop_index("ix_ref_prior_approval_version_token", table_name="ref_prior_approval")
    op.drop_table("ref_prior_approval")
    op.drop_index("ix_ref_contract_version", table_name="ref_contract")
    op.drop_table("ref_contract")
    op.drop_index("ix_ref_devolved_district_version", table_name="ref_devolved_district")
    op.drop_table("ref_devolved_district")
    op.drop_index("ix_ref_originating_commissioner_version_token", table_name="ref_originating_commissioner")
    op.drop_table("ref_originating_commissioner")
