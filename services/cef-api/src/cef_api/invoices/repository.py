"""Every query on invoices and their lines."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlmodel import Session, SQLModel

from cef_api.invoices.models import Challenge, ChallengeStatus, Invoice, InvoiceLine, InvoiceStatus, Payment

IN_CHUNK = 5_000
# SQLite page cache of a validation job's connection, in KiB. The default (2 MiB) holds a fraction
# of invoice_line's indexes once a large invoice is half in, so each insert re-reads index pages.
JOB_PAGE_CACHE_KIB = 65_536

invoice_t: sa.Table = Invoice.__table__  # type: ignore[attr-defined]
line_t: sa.Table = InvoiceLine.__table__  # type: ignore[attr-defined]
challenge_t: sa.Table = Challenge.__table__  # type: ignore[attr-defined]
payment_t: sa.Table = Payment.__table__  # type: ignore[attr-defined]
IV = invoice_t.c
L = line_t.c

# The look-back index of checks 14 and 15 (migration 0007): the spells with nights of lines whose
# outcome was not rejected, by invoice commissioner and patient token. Written as lines are stored;
# a failed invoice's are deleted with its lines, a withdrawn one's when it is withdrawn, and a
# purged one's with its tokens. A plain table, not a model: nothing reads it as objects.
spell_t = sa.Table(
    "invoice_spell",
    SQLModel.metadata,
    sa.Column("invoice_seq", sa.Integer, sa.ForeignKey("invoice.seq"), primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True),
    sa.Column("commissioner_code", sa.String(12), nullable=False),
    sa.Column("nhs_token", sa.String(128), nullable=False),
    sa.Column("admission", sa.Date, nullable=False),
    sa.Column("discharge", sa.Date, nullable=False),
)
SP = spell_t.c


def by_id(session: Session, invoice_id: str) -> Invoice | None:
    return session.execute(sa.select(Invoice).where(IV.id == invoice_id)).scalar_one_or_none()


def by_seq(session: Session, seq: int) -> Invoice | None:
    return session.get(Invoice, seq)


def by_idempotency_key(session: Session, provider_code: str, key: str) -> Invoice | None:
    """The invoice a key stands for: a failed invoice holds its key no more than its number
    (migration 0005), so a retry with the key submits again."""
    stmt = sa.select(Invoice).where(
        IV.provider_code == provider_code, IV.idempotency_key == key, IV.status != InvoiceStatus.FAILED
    )
    return session.execute(stmt).scalar_one_or_none()


def number_taken(session: Session, provider_code: str, invoice_number: str) -> bool:
    stmt = sa.select(sa.literal(1)).where(
        IV.provider_code == provider_code,
        IV.invoice_number == invoice_number,
        IV.status != InvoiceStatus.FAILED,
    )
    return session.execute(stmt.limit(1)).first() is not None


def chain_lock_name(commissioner_code: str) -> str:
    """The lock of a chain: every invoice addressed to one commissioner, whatever its provider,
    since checks 9, 14 and 15 look back over the lines submitted before (14 and 15 across
    providers). Held while claiming and while withdrawing."""
    return f"chain:{commissioner_code.upper()}"


def try_claim(session: Session, seq: int, commissioner_code: str) -> bool:
    """Marks the invoice `validating` when no other invoice of its chain (same commissioner, any
    provider) is validating and none submitted before it waits: one statement, so atomic. Call it
    under `chain_lock_name`'s lock (PostgreSQL: two claims under READ COMMITTED would not see each
    other's update)."""
    other = invoice_t.alias("other")
    blocking = sa.exists().where(
        other.c.commissioner_code == commissioner_code,
        other.c.seq != seq,
        sa.or_(
            other.c.status == InvoiceStatus.VALIDATING,
            sa.and_(other.c.status == InvoiceStatus.RECEIVED, other.c.seq < seq),
        ),
    )
    result = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(invoice_t)
            .where(invoice_t.c.seq == seq, invoice_t.c.status == InvoiceStatus.RECEIVED, ~blocking)
            .values(status=InvoiceStatus.VALIDATING, lines_done=0)
        ),
    )
    return bool(result.rowcount == 1)


@contextmanager
def job_connection(engine: Engine) -> Iterator[Connection]:
    """One connection for a whole validation job (bind a Session to it: its commits still commit).

    On SQLite it gets a page cache of JOB_PAGE_CACHE_KIB, kept from batch to batch, and is closed
    afterwards rather than handed back to the pool with that much memory."""
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            yield connection
            return
        connection.exec_driver_sql(f"PRAGMA cache_size=-{JOB_PAGE_CACHE_KIB}")
        connection.commit()
        try:
            yield connection
        finally:
            connection.invalidate()


def delete_lines(session: Session, seq: int) -> None:
    """The invoice's lines and their spells: a failed (or restarted) validation keeps nothing."""
    session.execute(sa.delete(spell_t).where(SP.invoice_seq == seq))
    session.execute(sa.delete(line_t).where(line_t.c.invoice_seq == seq))


def delete_invoice(session: Session, seq: int) -> None:
    session.execute(sa.delete(invoice_t).where(invoice_t.c.seq == seq))


LINE_COLUMNS = (
    "invoice_seq",
    "line_no",
    "line_ref",
    "outcome",
    "reasons",
    "responsible_commissioner",
    "expected_pennies",
    "claimed_pennies",
    "nhs_token",
    "activity_date",
    "hrg_code",
    "point_of_delivery",
    "service_code",
    "dob_token",
    "postcode_token",
    "dup_key",
)
_INSERT_SQL = (
    f"INSERT INTO invoice_line ({', '.join(LINE_COLUMNS)}) VALUES ({', '.join('?' for _ in LINE_COLUMNS)})"
)
_COPY_SQL = f"COPY invoice_line ({', '.join(LINE_COLUMNS)}) FROM STDIN"


def insert_lines(session: Session, rows: Iterable[tuple[Any, ...]]) -> None:
    """Bulk insert in the session's transaction: COPY on PostgreSQL, one executemany on SQLite.

    Rows in LINE_COLUMNS order, activity_date as its ISO text (`YYYY-MM-DD`), which both databases
    store as that date (SQLAlchemy keeps SQLite dates as that text too)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(_COPY_SQL) as copy:
            for row in rows:
                copy.write_row(row)
        return
    connection.connection.driver_connection.executemany(_INSERT_SQL, rows)  # type: ignore[union-attr]


# Lines of a failed or withdrawn invoice never count as earlier lines. Failing an invoice deletes
# its lines and withdrawing one clears their duplicate keys, in the same transaction; the rule is
# also kept by the status, whatever path left keys behind.
_NOT_FAILED = IV.status.not_in(
    [
        sa.literal(InvoiceStatus.FAILED, literal_execute=True),
        sa.literal(InvoiceStatus.WITHDRAWN, literal_execute=True),
    ]
)


def existing_dup_keys(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of `keys` earlier lines (any invoice not failed, this one's earlier batches included)
    hold."""
    found: set[str] = set()
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start : start + IN_CHUNK]
        found.update(
            session.execute(
                sa.select(line_t.c.dup_key)
                .join(invoice_t, invoice_t.c.seq == line_t.c.invoice_seq)
                .where(line_t.c.dup_key.in_(chunk), _NOT_FAILED)
            ).scalars()
        )
    return found


SPELL_COLUMNS = ("invoice_seq", "line_no", "commissioner_code", "nhs_token", "admission", "discharge")
_INSERT_SPELLS_SQL = (
    f"INSERT INTO invoice_spell ({', '.join(SPELL_COLUMNS)}) VALUES ({', '.join('?' for _ in SPELL_COLUMNS)})"
)
_COPY_SPELLS_SQL = f"COPY invoice_spell ({', '.join(SPELL_COLUMNS)}) FROM STDIN"
_BY_PATIENT = operator.itemgetter(SPELL_COLUMNS.index("nhs_token"))


def insert_spells(session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """Bulk insert of spells in SPELL_COLUMNS order (dates as ISO text), as insert_lines does."""
    if not rows:
        return
    # In patient order, the (commissioner_code, nhs_token) index takes them as runs of neighbouring
    # entries rather than one random page each: about a quarter less to store a batch's on SQLite.
    rows = sorted(rows, key=_BY_PATIENT)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(_COPY_SPELLS_SQL) as copy:
            for row in rows:
                copy.write_row(row)
        return
    connection.connection.driver_connection.executemany(_INSERT_SPELLS_SQL, rows)  # type: ignore[union-attr]


def _chain_spells(commissioner_code: str) -> sa.Select[Any]:
    """The stored spells billed to a commissioner (any provider, any invoice not failed or
    withdrawn): (nhs_token, admission, discharge). The dates as the driver gives them (ISO text on
    SQLite, where SQLAlchemy's own date parsing would cost more than the checks; dates on
    PostgreSQL): `stored_day` makes dates of them."""
    return (
        sa.select(
            SP.nhs_token, sa.type_coerce(SP.admission, sa.String), sa.type_coerce(SP.discharge, sa.String)
        )
        .join(invoice_t, invoice_t.c.seq == SP.invoice_seq)
        .where(SP.commissioner_code == commissioner_code.upper(), _NOT_FAILED)
    )


@functools.lru_cache(maxsize=65_536)
def stored_day(value: str | date) -> date:
    """A stored spell date as a date (one object per day, shared by every spell that holds it)."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def chain_spell_count(session: Session, commissioner_code: str) -> int:
    """How many stored spells billed to the commissioner count as earlier spells."""
    spells = _chain_spells(commissioner_code).subquery()
    return int(session.execute(sa.select(sa.func.count()).select_from(spells)).scalar_one())


def chain_spells(session: Session, commissioner_code: str) -> Iterator[tuple[str, date, date]]:
    """Every stored spell billed to the commissioner that counts: (nhs_token, admission, discharge)."""
    day = stored_day
    for token, admission, discharge in session.execute(_chain_spells(commissioner_code)):
        yield token, day(admission), day(discharge)


def earlier_spells(
    session: Session, commissioner_code: str, nhs_tokens: Sequence[str], *, after: date, before: date
) -> Iterator[tuple[str, date, date]]:
    """The stored spells of these patients billed to this commissioner (any provider, any invoice
    not failed or withdrawn, this one's earlier batches included) that hold a night between `after`
    and `before` (a spell ending on or before `after`, or starting on or after `before`, can meet
    no line dated within them): (nhs_token, admission, discharge), in no particular order. Read
    through the (commissioner_code, nhs_token) index, a chunk of tokens at a time."""
    day = stored_day
    for start in range(0, len(nhs_tokens), IN_CHUNK):
        chunk = nhs_tokens[start : start + IN_CHUNK]
        stmt = _chain_spells(commissioner_code).where(
            SP.nhs_token.in_(chunk), SP.admission < before, SP.discharge > after
        )
        for token, admission, discharge in session.execute(stmt):
            yield token, day(admission), day(discharge)


def _chain_keys(provider_code: str, commissioner_code: str, seq: int) -> sa.Select[Any]:
    """Duplicate keys of the other invoices of a chain (same provider and commissioner)."""
    return (
        sa.select(line_t.c.dup_key)
        .join(invoice_t, invoice_t.c.seq == line_t.c.invoice_seq)
        .where(
            IV.provider_code == provider_code,
            IV.commissioner_code == commissioner_code,
            IV.seq != seq,
            _NOT_FAILED,
            line_t.c.dup_key.is_not(None),
        )
    )


def chain_dup_key_count(session: Session, provider_code: str, commissioner_code: str, seq: int) -> int:
    keys = _chain_keys(provider_code, commissioner_code, seq).subquery()
    return int(session.execute(sa.select(sa.func.count()).select_from(keys)).scalar_one())


def chain_dup_keys(session: Session, provider_code: str, commissioner_code: str, seq: int) -> set[str]:
    return set(session.execute(_chain_keys(provider_code, commissioner_code, seq)).scalars())


def update_invoice(session: Session, seq: int, **values: Any) -> None:
    session.execute(sa.update(invoice_t).where(invoice_t.c.seq == seq).values(**values))


def open_invoices(session: Session) -> list[Invoice]:
    stmt = sa.select(Invoice).where(IV.status.in_(InvoiceStatus.OPEN))
    return list(session.execute(stmt).scalars())


def page_invoices(
    session: Session,
    *,
    provider_code: str | None,
    commissioner_code: str | None,
    statuses: Sequence[str] | None,
    after_seq: int | None,
    limit: int,
) -> list[Invoice]:
    stmt = sa.select(Invoice)
    if provider_code:
        stmt = stmt.where(IV.provider_code == provider_code)
    if commissioner_code:
        stmt = stmt.where(IV.commissioner_code == commissioner_code)
    if statuses:
        stmt = stmt.where(IV.status.in_(statuses))
    if after_seq is not None:
        stmt = stmt.where(IV.seq > after_seq)
    stmt = stmt.order_by(IV.seq).limit(limit)
    return list(session.execute(stmt).scalars())


def payable_total(session: Session, commissioner_code: str) -> tuple[int, int]:
    """(approved, paid) pennies over the commissioner's invoices that still have money to pay."""
    stmt = sa.select(
        sa.func.coalesce(sa.func.sum(IV.approved_pennies), 0),
        sa.func.coalesce(sa.func.sum(IV.paid_pennies), 0),
    ).where(IV.commissioner_code == commissioner_code, IV.status.in_(InvoiceStatus.PAYABLE))
    approved, paid = session.execute(stmt).one()
    return int(approved), int(paid)


def stop_counting_lines(session: Session, seq: int) -> int:
    """Clears the duplicate keys and removes the spells of an invoice's lines (withdrawn: they are
    earlier lines no more); the count of lines whose key was cleared."""
    session.execute(sa.delete(spell_t).where(SP.invoice_seq == seq))
    result = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(line_t).where(L.invoice_seq == seq, L.dup_key.is_not(None)).values(dup_key=None)
        ),
    )
    return int(result.rowcount or 0)


def close_challenges(session: Session, line_ids: Sequence[int], now: datetime) -> int:
    """Closes the challenges still waiting (open or answered) on these lines: they were decided."""
    count = 0
    for start in range(0, len(line_ids), IN_CHUNK):
        chunk = list(line_ids[start : start + IN_CHUNK])
        result = cast(
            "sa.CursorResult[Any]",
            session.execute(
                sa.update(challenge_t)
                .where(challenge_t.c.line_id.in_(chunk), challenge_t.c.status != ChallengeStatus.CLOSED)
                .values(status=ChallengeStatus.CLOSED, closed_at=now)
            ),
        )
        count += int(result.rowcount or 0)
    return count


def close_invoice_challenges(session: Session, seq: int, now: datetime) -> int:
    result = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(challenge_t)
            .where(challenge_t.c.invoice_seq == seq, challenge_t.c.status != ChallengeStatus.CLOSED)
            .values(status=ChallengeStatus.CLOSED, closed_at=now)
        ),
    )
    return int(result.rowcount or 0)


def payments_of(session: Session, seq: int) -> list[Payment]:
    stmt = sa.select(Payment).where(payment_t.c.invoice_seq == seq).order_by(payment_t.c.id)
    return list(session.execute(stmt).scalars())


def payment_by_reference(session: Session, seq: int, reference: str) -> Payment | None:
    stmt = sa.select(Payment).where(payment_t.c.invoice_seq == seq, payment_t.c.reference == reference)
    return session.execute(stmt).scalar_one_or_none()


def page_lines(
    session: Session, *, seq: int, outcome: str | None, after_line_no: int | None, limit: int
) -> list[InvoiceLine]:
    stmt = sa.select(InvoiceLine).where(L.invoice_seq == seq)
    if outcome:
        stmt = stmt.where(L.outcome == outcome)
    if after_line_no is not None:
        stmt = stmt.where(L.line_no > after_line_no)
    stmt = stmt.order_by(L.line_no).limit(limit)
    return list(session.execute(stmt).scalars())


def page_line_rows(
    session: Session, *, seq: int, outcome: str | None, after_line_no: int | None, limit: int
) -> list[sa.Row[Any]]:
    """As page_lines, as plain rows (attributes by column name): an export of a million lines
    builds no ORM object per line, which is most of the cost of reading them."""
    stmt = sa.select(line_t).where(L.invoice_seq == seq)
    if outcome:
        stmt = stmt.where(L.outcome == outcome)
    if after_line_no is not None:
        stmt = stmt.where(L.line_no > after_line_no)
    return list(session.execute(stmt.order_by(L.line_no).limit(limit)).all())


# `outcome = 'query'` written into the SQL, not bound: the databases then see that a statement
# reads only query lines, and use the index over them (migration 0003).
_QUERY_LINE = L.outcome == sa.literal("query", literal_execute=True)


def line_by_ref(session: Session, seq: int, line_ref: str) -> InvoiceLine | None:
    """The invoice's line of `line_ref` (one at most: the structural pass refuses a file that
    repeats one). Looked for among the query lines first, through their index, as a line is looked
    up to be decided; a line of another outcome, which cannot be, is then found by reading the
    invoice's lines."""
    stmt = sa.select(InvoiceLine).where(L.invoice_seq == seq, L.line_ref == line_ref)
    found: InvoiceLine | None = session.execute(stmt.where(_QUERY_LINE)).scalars().first()
    if found is None:
        found = session.execute(stmt).scalars().first()
    return found


def pending_queries(session: Session, seq: int) -> int:
    # The decision and the query state are set together: a decided line has both.
    stmt = sa.select(sa.func.count()).where(L.invoice_seq == seq, _QUERY_LINE, L.decision.is_(None))
    return int(session.execute(stmt).scalar_one())


def payable_totals(session: Session, seq: int) -> tuple[int, int, int]:
    """(approved pennies, lines paid, lines not paid) once every query line is decided."""
    paid = sa.case(
        (L.outcome == "valid", L.claimed_pennies),
        (
            sa.and_(L.outcome == "query", L.decision == "accept"),
            L.decided_pennies,
        ),
        else_=None,
    )
    stmt = sa.select(
        sa.func.coalesce(sa.func.sum(paid), 0),
        sa.func.count(paid),
        sa.func.count(),
    ).where(L.invoice_seq == seq)
    total, paid_lines, all_lines = session.execute(stmt).one()
    return int(total), int(paid_lines), int(all_lines) - int(paid_lines)


def closed_before(session: Session, cutoff: datetime) -> list[int]:
    decided = sa.func.coalesce(IV.decided_at, IV.submitted_at)
    stmt = sa.select(IV.seq).where(
        IV.status.in_(InvoiceStatus.CLOSED),
        IV.purged_at.is_(None),
        decided < cutoff,
    )
    return [int(s) for s in session.execute(stmt).scalars()]


def purge_line_tokens(session: Session, seqs: Sequence[int]) -> int:
    count = 0
    for start in range(0, len(seqs), IN_CHUNK):
        chunk = list(seqs[start : start + IN_CHUNK])
        # The spells hold the same tokens, and purged lines count for no later line.
        session.execute(sa.delete(spell_t).where(SP.invoice_seq.in_(chunk)))
        result = cast(
            "sa.CursorResult[Any]",
            session.execute(
                sa.update(line_t)
                .where(line_t.c.invoice_seq.in_(chunk))
                .values(nhs_token=None, dob_token=None, postcode_token=None, dup_key=None)
            ),
        )
        count += int(result.rowcount or 0)
    return count
