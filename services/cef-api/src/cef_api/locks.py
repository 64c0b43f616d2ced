"""Serialisation points shared by every instance of the service, on both supported databases."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlmodel import Session


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def transaction_lock(session: Session, name: str) -> None:
    """Holds the named lock until the session's transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite has one writer at a time: the
    transaction that writes first holds the database until it ends, which is the same guarantee
    as long as the caller's first statement after this is a write."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(name)})
