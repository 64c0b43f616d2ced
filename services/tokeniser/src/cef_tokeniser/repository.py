"""Every query of the tokeniser: data key versions and sealed originals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from cef_tokeniser.models import DataKeyRow, TokenOriginal

DATA_KEY: sa.Table = DataKeyRow.__table__  # type: ignore[attr-defined]
TOKEN_ORIGINAL: sa.Table = TokenOriginal.__table__  # type: ignore[attr-defined]


def _insert_ignoring_duplicates(conn: Connection, table: sa.Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def current_version(conn: Connection, kind: str, context: str) -> int | None:
    stmt = sa.select(sa.func.max(DATA_KEY.c.version)).where(
        DATA_KEY.c.kind == kind, DATA_KEY.c.context == context
    )
    value = conn.execute(stmt).scalar_one_or_none()
    return int(value) if value is not None else None


def wrapped_key(conn: Connection, kind: str, context: str, version: int) -> tuple[bytes, str] | None:
    """The wrapped key of one version and the id of the master key that wrapped it."""
    stmt = sa.select(DATA_KEY.c.wrapped_key, DATA_KEY.c.master_key_id).where(
        DATA_KEY.c.kind == kind, DATA_KEY.c.context == context, DATA_KEY.c.version == version
    )
    row = conn.execute(stmt).first()
    return (bytes(row[0]), str(row[1])) if row is not None else None


def add_key_version(
    conn: Connection,
    *,
    kind: str,
    context: str,
    version: int,
    wrapped: bytes,
    master_key_id: str,
    created_at: datetime,
    ignore_existing: bool,
) -> bool:
    """Adds a key version; True when this call added it (False: it existed and ignore_existing)."""
    values = {
        "kind": kind,
        "context": context,
        "version": version,
        "wrapped_key": wrapped,
        "master_key_id": master_key_id,
        "created_at": created_at,
    }
    stmt = _insert_ignoring_duplicates(conn, DATA_KEY) if ignore_existing else sa.insert(DATA_KEY)
    result = conn.execute(stmt, values)
    return bool(result.rowcount)


def key_versions(conn: Connection) -> list[sa.Row[Any]]:
    stmt = sa.select(
        DATA_KEY.c.kind,
        DATA_KEY.c.context,
        DATA_KEY.c.version,
        DATA_KEY.c.master_key_id,
        DATA_KEY.c.created_at,
    ).order_by(DATA_KEY.c.kind, DATA_KEY.c.context, DATA_KEY.c.version)
    return list(conn.execute(stmt))


def master_key_ids(conn: Connection) -> set[str]:
    return {str(v) for v in conn.execute(sa.select(DATA_KEY.c.master_key_id).distinct()).scalars()}


def _token_array() -> Any:
    # One comma-joined string split by the server: adapting a 100,000-item list parameter costs
    # several times more on the client. Tokens never hold a comma (crypto.TOKEN_PATTERN).
    return sa.func.string_to_array(sa.bindparam("tokens", type_=sa.Text), sa.literal(","))


def _joined(tokens: Sequence[str]) -> str:
    joined = ",".join(tokens)
    if joined.count(",") != len(tokens) - 1:
        raise ValueError("a token holds a comma; tokens are checked against crypto.TOKEN_PATTERN first")
    return joined


def _sqlite_token_list() -> Any:
    # One JSON array parameter expanded by SQLite: no limit on bound parameters, no chunking.
    return (
        sa.select(sa.column("value", sa.String))
        .select_from(sa.func.json_each(sa.bindparam("tokens", type_=sa.Text)))
        .scalar_subquery()
    )


def stored_tokens(conn: Connection, context: str, tokens: Sequence[str]) -> set[str]:
    """Which of `tokens` already have their original stored in `context`."""
    found: set[str] = set()
    if not tokens:
        return found
    if conn.dialect.name == "postgresql":
        stmt = sa.select(TOKEN_ORIGINAL.c.token).where(
            TOKEN_ORIGINAL.c.context == context, TOKEN_ORIGINAL.c.token == sa.func.any(_token_array())
        )
        found.update(conn.execute(stmt, {"tokens": _joined(tokens)}).scalars())
        return found
    stmt = sa.select(TOKEN_ORIGINAL.c.token).where(
        TOKEN_ORIGINAL.c.context == context, TOKEN_ORIGINAL.c.token.in_(_sqlite_token_list())
    )
    found.update(conn.execute(stmt, {"tokens": orjson.dumps(list(tokens)).decode()}).scalars())
    return found


def sealed_originals(conn: Connection, context: str, tokens: Sequence[str]) -> dict[str, bytes]:
    """The sealed originals of those of `tokens` that were issued in `context`."""
    found: dict[str, bytes] = {}
    if not tokens:
        return found
    if conn.dialect.name == "postgresql":
        stmt = sa.select(TOKEN_ORIGINAL.c.token, TOKEN_ORIGINAL.c.sealed).where(
            TOKEN_ORIGINAL.c.context == context, TOKEN_ORIGINAL.c.token == sa.func.any(_token_array())
        )
        found.update((str(t), bytes(s)) for t, s in conn.execute(stmt, {"tokens": _joined(tokens)}))
        return found
    stmt = sa.select(TOKEN_ORIGINAL.c.token, TOKEN_ORIGINAL.c.sealed).where(
        TOKEN_ORIGINAL.c.context == context, TOKEN_ORIGINAL.c.token.in_(_sqlite_token_list())
    )
    found.update(
        (str(t), bytes(s)) for t, s in conn.execute(stmt, {"tokens": orjson.dumps(list(tokens)).decode()})
    )
    return found


def add_originals(conn: Connection, rows: list[tuple[str, str, str, int, bytes]]) -> int:
    """Bulk-inserts sealed originals as (context, token, kind, key_version, sealed); a token stored
    meanwhile by another request is left as it is.

    Straight to the driver: at 100,000 rows a batch, SQLAlchemy's per-row parameter handling
    would cost more than the database does."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return _copy_originals_postgresql(conn, rows)
    sql = (
        "INSERT INTO token_original (context, token, kind, key_version, sealed) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    return int(conn.exec_driver_sql(sql, rows).rowcount)


def _copy_originals_postgresql(conn: Connection, rows: list[tuple[str, str, str, int, bytes]]) -> int:
    """Binary COPY into a session table, then one INSERT … ON CONFLICT DO NOTHING from it."""
    raw = conn.connection.driver_connection
    assert raw is not None, "a connection in a transaction has its driver connection"
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS token_original_load "
            "(LIKE token_original INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(
            "COPY token_original_load (context, token, kind, key_version, sealed) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["varchar", "varchar", "varchar", "int4", "bytea"])
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "INSERT INTO token_original (context, token, kind, key_version, sealed) "
            "SELECT context, token, kind, key_version, sealed FROM token_original_load ON CONFLICT DO NOTHING"
        )
        added = int(cur.rowcount)
        cur.execute("TRUNCATE token_original_load")
    return added
