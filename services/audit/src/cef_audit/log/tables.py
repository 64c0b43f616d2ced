"""The audit log's tables (SQLAlchemy Core: appends and verification stream millions of rows)."""

from __future__ import annotations

import sqlalchemy as sa

from cef_common.db import NAMING_CONVENTION

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

GENESIS_HASH = "0" * 64

# The outcome nearly every event has. The outcome index holds only the others (denied, failure):
# those are the rare values a query must find without scanning, and leaving success out spares
# nearly every append one B-tree insertion. A query for success needs no index (most events match).
COMMON_OUTCOME = "success"
RARE_OUTCOMES = sa.text(f"outcome <> '{COMMON_OUTCOME}'")

# `canonical` holds the exact RFC 8785 bytes whose SHA-256 is `hash`; it is the record of truth and
# what every query returns. The other columns are an index over it for filtering: verification
# checks that each agrees with the canonical bytes, so editing either is caught.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
    ),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    # Fixed-width UTC "YYYY-MM-DDTHH:MM:SS.ffffffZ": sorts as text, identical on both databases.
    # Not indexed: it never goes backwards along seq, so a time bound is found by binary search
    # over the primary key (`events.repository.first_seq_at_or_after`).
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
    sa.Index("ix_audit_events_actor_sub_seq", "actor_sub", "seq"),
    sa.Index("ix_audit_events_actor_org_seq", "actor_org", "seq"),
    sa.Index("ix_audit_events_type_seq", "type", "seq"),
    sa.Index("ix_audit_events_entity_id_seq", "entity_id", "seq"),
    sa.Index(
        "ix_audit_events_rare_outcome_seq",
        "outcome",
        "seq",
        sqlite_where=RARE_OUTCOMES,
        postgresql_where=RARE_OUTCOMES,
    ),
)

# One row (id = 1): the sequencer's lock and the log's current length and head hash.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("length", sa.BigInteger(), nullable=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("recorded_at", sa.String(27), nullable=True),
    sa.CheckConstraint("id = 1", name="single_row"),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column(
        "length", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
    ),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("issued_at", sa.String(27), nullable=False),
    sa.Column("kid", sa.String(64), nullable=False),
    sa.Column("jws", sa.Text(), nullable=False),
)
