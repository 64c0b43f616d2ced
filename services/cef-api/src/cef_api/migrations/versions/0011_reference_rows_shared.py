"""Reference rows shared between versions, so that a monthly reload writes only what changed.

Until now every version of a dataset held a whole copy of its rows. From here a row holds the
version that added it (`version`) and the first version it is no longer in force in (`retired_in`,
NULL while it is): a row is in force at version v when `version <= v` and `retired_in` is NULL or
greater than v. A reload retires the rows whose records left the file and adds the records that
are new, and the rows of records it still holds stay as they are.

`fingerprint` is a keyed BLAKE2b digest (120 bits) of the record the row was read from, as the
file held it (docs/cef-api.md, "Reloads"): a reload recognises an unchanged record by it without
parsing or tokenising the record again. It is keyed by a key derived from the CEF API's
key-encryption key, held outside the database, so it cannot be used to confirm a guessed record.

Rows stored before this revision are copies per version: the rows of every superseded version are
retired in the version after theirs. They have no fingerprint, so the first reload of a dataset
after the upgrade reads the whole file.

`reference_version.file_digest` is a digest of the file a version was read from, keyed the same
way: the same file sent again changes nothing, and is answered at once.

The (version, nhs_token) indexes become (nhs_token) indexes: a version is now a range of rows.
The retired rows are indexed by `retired_in`, for pruning.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → its dataset's name in reference_version
TABLES = {
    "ref_gp_practice": "gp-practices",
    "ref_patient": "patients",
    "ref_registration": "registrations",
    "ref_postcode_district": "postcode-districts",
    "ref_tariff": "tariff",
    "ref_provider": "providers",
    "ref_specialised_service": "specialised-services",
    "ref_originating_commissioner": "originating-commissioners",
    "ref_devolved_district": "devolved-districts",
    "ref_contract": "contracts",
    "ref_prior_approval": "prior-approvals",
}
# The tables read by NHS-number token, and their indexes before and after.
TOKEN_INDEXES = {
    "ref_patient": "ix_ref_patient_version_token",
    "ref_registration": "ix_ref_registration_version_token",
    "ref_originating_commissioner": "ix_ref_originating_commissioner_version_token",
    "ref_prior_approval": "ix_ref_prior_approval_version_token",
}


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("reference_version", sa.Column("file_digest", sa.LargeBinary(32), nullable=True))
    for table, dataset in TABLES.items():
        op.add_column(table, sa.Column("retired_in", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("fingerprint", sa.LargeBinary(15), nullable=True))
        # A superseded version's copy is in force at its own version only.
        bind.execute(
            sa.text(
                f"UPDATE {table} SET retired_in = version + 1 WHERE version < "
                "(SELECT max(version) FROM reference_version WHERE dataset = :dataset)"
            ),
            {"dataset": dataset},
        )
        # Partial: the retired rows only, which pruning looks for. A query for the rows in force
        # (retired_in IS NULL) must not take it for a way in (SQLite would read every row).
        op.create_index(
            f"ix_{table}_retired_in",
            table,
            ["retired_in"],
            sqlite_where=sa.text("retired_in IS NOT NULL"),
            postgresql_where=sa.text("retired_in IS NOT NULL"),
        )
    for table, old in TOKEN_INDEXES.items():
        op.drop_index(old, table_name=table)
        op.create_index(f"ix_{table}_token", table, ["nhs_token"])


def downgrade() -> None:
    # Checked before anything changes (SQLite runs each statement of a migration on its own): the
    # copies per version can be made again only when no row is shared, i.e. one version a dataset.
    bind = op.get_bind()
    several = bind.execute(
        sa.text(
            "SELECT count(*) FROM (SELECT dataset FROM reference_version GROUP BY dataset "
            "HAVING count(*) > 1) AS several"
        )
    ).scalar_one()
    retired = sum(
        bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE retired_in IS NOT NULL")).scalar_one()
        for table in TABLES
    )
    if several or retired:
        raise RuntimeError(
            f"{several} reference dataset(s) keep superseded versions ({retired} retired rows) for "
            "invoices still being validated; let them finish (the superseded rows are then deleted) "
            "and downgrade again"
        )
    for table, dataset in TABLES.items():
        # The rows in force, as the copy of the one version there is.
        bind.execute(
            sa.text(
                f"UPDATE {table} SET version = "
                "(SELECT max(version) FROM reference_version WHERE dataset = :dataset) "
                "WHERE EXISTS (SELECT 1 FROM reference_version WHERE dataset = :dataset)"
            ),
            {"dataset": dataset},
        )
    for table, old in TOKEN_INDEXES.items():
        op.drop_index(f"ix_{table}_token", table_name=table)
        op.create_index(old, table, ["version", "nhs_token"])
    for table in TABLES:
        op.drop_index(f"ix_{table}_retired_in", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("fingerprint")
            batch.drop_column("retired_in")
    with op.batch_alter_table("reference_version") as batch:
        batch.drop_column("file_digest")
