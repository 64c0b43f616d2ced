"""Every query on the reference tables."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import Session, SQLModel

from cef_api.reference.models import (
    RefContract,
    RefDevolvedDistrict,
    ReferenceVersion,
    RefGpPractice,
    RefOriginatingCommissioner,
    RefPatient,
    RefPostcodeDistrict,
    RefPriorApproval,
    RefProvider,
    RefRegistration,
    RefSpecialisedService,
    RefTariff,
)

# dataset → its rows' table
TABLES: dict[str, type[SQLModel]] = {
    "gp-practices": RefGpPractice,
    "patients": RefPatient,
    "registrations": RefRegistration,
    "postcode-districts": RefPostcodeDistrict,
    "tariff": RefTariff,
    "providers": RefProvider,
    "specialised-services": RefSpecialisedService,
    "originating-commissioners": RefOriginatingCommissioner,
    "devolved-districts": RefDevolvedDistrict,
    "contracts": RefContract,
    "prior-approvals": RefPriorApproval,
}

V = ReferenceVersion.__table__.c  # type: ignore[attr-defined]

INSERT_CHUNK = 100_000
# The page cache (KiB, negative as SQLite takes it) while a large version is written (its rows come
# in token order, so the token index grows at its end; the cache keeps the pages being filled).
# Put back afterwards.
SQLITE_LOAD_CACHE_KIB = -32_768
# Well under the bound-parameter limits of SQLite (32,766) and PostgreSQL (65,535).
IN_CHUNK = 5_000


def table_of(dataset: str) -> sa.Table:
    table: sa.Table = TABLES[dataset].__table__  # type: ignore[attr-defined]
    return table


def in_force(table: sa.Table, version: int) -> sa.ColumnElement[bool]:
    """The rows of `table` in force at `version`: added by it or before, and not retired by then."""
    return sa.and_(
        table.c.version <= version, sa.or_(table.c.retired_in.is_(None), table.c.retired_in > version)
    )


def current_versions(session: Session) -> dict[str, ReferenceVersion]:
    """The version in force of every dataset ever loaded."""
    latest = sa.select(V.dataset, sa.func.max(V.version).label("v")).group_by(V.dataset).subquery()
    stmt = sa.select(ReferenceVersion).join(
        latest,
        sa.and_(V.dataset == latest.c.dataset, V.version == latest.c.v),
    )
    return {row.dataset: row for row in session.execute(stmt).scalars()}


def any_loaded(session: Session) -> bool:
    count: int = session.execute(sa.select(sa.func.count()).select_from(ReferenceVersion)).scalar_one()
    return count > 0


def versions_exist(session: Session, versions: dict[str, int]) -> bool:
    return set(versions_named(session, versions)) == set(versions)


def next_version(session: Session, dataset: str) -> int:
    stmt = sa.select(sa.func.max(V.version)).where(V.dataset == dataset)
    return int(session.execute(stmt).scalar_one() or 0) + 1


def insert_rows(
    session: Session, dataset: str, version: int, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Bulk-inserts the rows a version adds (tuples in `columns` order, without the version), straight to
    the driver: at millions of rows SQLAlchemy's per-row parameter handling would cost more than the
    database does. PostgreSQL takes them by COPY; SQLite by executemany in the caller's transaction,
    with a page cache large enough that the token index is not written over and over."""
    if not rows:
        return
    table = table_of(dataset)
    names = ", ".join(["version", *columns])
    connection = session.connection()
    raw = connection.connection.driver_connection
    assert raw is not None, "a connection in a transaction has its driver connection"
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((version, *row))
        return
    dates = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, sa.Date)]
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * (len(columns) + 1))})"
    cursor = raw.cursor()
    try:
        (cache,) = cursor.execute("PRAGMA cache_size").fetchone()
        cursor.execute(f"PRAGMA cache_size = {SQLITE_LOAD_CACHE_KIB}")
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            cursor.executemany(sql, _with_iso_dates(version, chunk, dates))
        cursor.execute(f"PRAGMA cache_size = {int(cache)}")
    finally:
        cursor.close()


def _with_iso_dates(
    version: int, rows: Sequence[tuple[Any, ...]], at: list[int]
) -> Iterator[tuple[Any, ...]]:
    """Rows with the version first and their dates as SQLAlchemy stores them in SQLite (ISO text),
    not by sqlite3's deprecated default adapter; a date is formatted once however often it repeats."""
    if not at:
        for row in rows:
            yield (version, *row)
        return
    iso: dict[Any, Any] = {}

    def text(day: Any) -> Any:
        if day is None:
            return None
        found = iso.get(day)
        if found is None:
            found = iso[day] = day.isoformat()
        return found

    for row in rows:
        values = [version, *row]
        for i in at:
            values[i + 1] = text(values[i + 1])
        yield tuple(values)


def retire_rows(session: Session, dataset: str, version: int, ids: Iterable[int]) -> int:
    """Retires the rows of these ids as of `version` (their records left the file)."""
    table = table_of(dataset)
    ids = sorted(ids)
    retired = 0
    for start in range(0, len(ids), IN_CHUNK):
        stmt = (
            sa.update(table).where(table.c.id.in_(ids[start : start + IN_CHUNK])).values(retired_in=version)
        )
        retired += int(cast("sa.CursorResult[Any]", session.execute(stmt)).rowcount or 0)
    return retired


def retire_in_force(
    session: Session, dataset: str, version: int, *, unfingerprinted_only: bool = False
) -> int:
    """Retires as of `version` every row in force (a file replacing the dataset whole), or only those
    with no fingerprint (a reload cannot recognise their records: they are read again)."""
    table = table_of(dataset)
    stmt = sa.update(table).where(table.c.retired_in.is_(None)).values(retired_in=version)
    if unfingerprinted_only:
        stmt = stmt.where(table.c.fingerprint.is_(None))
    return int(cast("sa.CursorResult[Any]", session.execute(stmt)).rowcount or 0)


def fingerprints_in_force(session: Session, dataset: str) -> dict[bytes, int]:
    """Fingerprint → row id of the rows in force that have one, read through the driver (millions
    of rows: SQLAlchemy's per-row handling would cost more than the database does)."""
    table = table_of(dataset)
    raw = session.connection().connection.driver_connection
    assert raw is not None, "a connection in a transaction has its driver connection"
    cursor = raw.cursor()
    try:
        cursor.execute(
            f"SELECT fingerprint, id FROM {table.name} WHERE retired_in IS NULL AND fingerprint IS NOT NULL"
        )
        known: dict[bytes, int] = {}
        while batch := cursor.fetchmany(INSERT_CHUNK):
            if isinstance(batch[0][0], bytes):
                known.update(batch)
            else:  # a driver giving memoryviews
                known.update((bytes(fingerprint), row_id) for fingerprint, row_id in batch)
        return known
    finally:
        cursor.close()


def delete_versions(session: Session, dataset: str, keep: Iterable[int], limit: int | None = None) -> int:
    """Deletes the rows of `dataset` in force at no version in `keep` (retired rows only: a row in
    force now is in force at the current version), then, once none is left, the records of the
    versions not in `keep`; with `limit`, at most that many rows. The rows deleted."""
    keep = sorted(set(keep))
    table = table_of(dataset)
    unread = sa.and_(
        table.c.retired_in.is_not(None),
        *(sa.not_(sa.and_(table.c.version <= k, table.c.retired_in > k)) for k in keep),
    )
    if limit is None:
        stmt = sa.delete(table).where(unread)
    else:
        stmt = sa.delete(table).where(table.c.id.in_(sa.select(table.c.id).where(unread).limit(limit)))
    deleted = int(cast("sa.CursorResult[Any]", session.execute(stmt)).rowcount or 0)
    if limit is None or not deleted:
        session.execute(sa.delete(ReferenceVersion).where(V.dataset == dataset, V.version.not_in(keep)))
    return deleted


def all_rows(session: Session, dataset: str, version: int, columns: Sequence[str]) -> list[sa.Row[Any]]:
    table = table_of(dataset)
    stmt = sa.select(*(table.c[name] for name in columns)).where(in_force(table, version))
    return list(session.execute(stmt))


def rows_for_tokens(
    session: Session, dataset: str, version: int, tokens: Sequence[str], columns: Sequence[str]
) -> list[sa.Row[Any]]:
    """Rows of a patient-keyed dataset for the given NHS-number tokens."""
    table = table_of(dataset)
    out: list[sa.Row[Any]] = []
    cols = [table.c[name] for name in columns]
    for start in range(0, len(tokens), IN_CHUNK):
        chunk = tokens[start : start + IN_CHUNK]
        stmt = sa.select(*cols).where(in_force(table, version), table.c.nhs_token.in_(chunk))
        out.extend(session.execute(stmt))
    return out


def commissioner_known(session: Session, versions: dict[str, ReferenceVersion], code: str) -> bool:
    """A commissioner is known when some reference dataset names it."""
    for dataset in ("gp-practices", "postcode-districts", "specialised-services"):
        current = versions.get(dataset)
        if current is None:
            continue
        table = table_of(dataset)
        stmt = (
            sa.select(sa.literal(1))
            .where(in_force(table, current.version), table.c.commissioner_code == code)
            .limit(1)
        )
        if session.execute(stmt).first() is not None:
            return True
    return False


def provider_known(session: Session, versions: dict[str, ReferenceVersion], code: str) -> bool:
    current = versions.get("providers")
    if current is None:
        return False
    table = table_of("providers")
    stmt = (
        sa.select(sa.literal(1))
        .where(in_force(table, current.version), table.c.provider_code == code)
        .limit(1)
    )
    return session.execute(stmt).first() is not None


def versions_named(session: Session, versions: dict[str, int]) -> dict[str, ReferenceVersion]:
    """The version records of the given version numbers (what an invoice pinned); a dataset whose
    version is gone is left out."""
    if not versions:
        return {}
    wanted = [sa.and_(V.dataset == dataset, V.version == version) for dataset, version in versions.items()]
    stmt = sa.select(ReferenceVersion).where(sa.or_(*wanted))
    return {row.dataset: row for row in session.execute(stmt).scalars()}
