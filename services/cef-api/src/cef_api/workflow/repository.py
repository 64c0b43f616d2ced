"""Every query of challenges, the staff work queue and bulk decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import Session

from cef_api.invoices.models import (
    Challenge,
    ChallengeStatus,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    QueryState,
)
from cef_api.invoices.repository import IN_CHUNK, challenge_t, invoice_t, line_t

IV = invoice_t.c
L = line_t.c
C = challenge_t.c

# Written into the SQL rather than bound, so that the databases see a statement reads only query
# lines of validated invoices and may use the indexes over query lines (migration 0003).
_QUERY_LINE = L.outcome == sa.literal("query", literal_execute=True)
_VALIDATED = IV.status == sa.literal(InvoiceStatus.VALIDATED, literal_execute=True)
# A query line nobody has touched has no state written (NULL).
_LINE_STATE = sa.func.coalesce(L.query_state, sa.literal(QueryState.QUERY, literal_execute=True))


def _carries_reason(code: str) -> sa.ColumnElement[bool]:
    """`reasons` (codes joined by ';') holds `code` itself, not a code it is part of."""
    return (sa.literal(";") + L.reasons + sa.literal(";")).contains(f";{code};", autoescape=True)


# --- challenges -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChallengeRow:
    challenge: Challenge
    invoice: Invoice
    line: InvoiceLine


def challenge_by_id(session: Session, challenge_id: str) -> ChallengeRow | None:
    stmt = (
        sa.select(Challenge, Invoice, InvoiceLine)
        .join(invoice_t, IV.seq == C.invoice_seq)
        .join(line_t, L.id == C.line_id)
        .where(C.id == challenge_id)
    )
    row = session.execute(stmt).first()
    return ChallengeRow(*row) if row is not None else None


def _overdue_rank(today: date) -> sa.ColumnElement[int]:
    # 0 for an open challenge past its due date: those come first.
    return sa.case((sa.and_(C.status == ChallengeStatus.OPEN, C.due_date < today), 0), else_=1)


@dataclass(frozen=True)
class ChallengeKey:
    """Where a page of challenges ends: (overdue rank, due date, seq), the order they are listed in."""

    rank: int
    due_date: date
    seq: int


def page_challenges(
    session: Session,
    *,
    provider_code: str | None,
    commissioner_code: str | None,
    status: str | None,
    invoice_id: str | None,
    today: date,
    after: ChallengeKey | None,
    limit: int,
) -> list[tuple[ChallengeRow, ChallengeKey]]:
    """Challenges of a provider's or a commissioner's invoices (either, when both are given),
    overdue ones first, then by due date and age."""
    rank = _overdue_rank(today)
    sides = []
    if provider_code:
        sides.append(C.provider_code == provider_code)
    if commissioner_code:
        sides.append(C.commissioner_code == commissioner_code)
    if not sides:
        return []
    stmt = (
        sa.select(Challenge, Invoice, InvoiceLine, rank.label("rank"))
        .join(invoice_t, IV.seq == C.invoice_seq)
        .join(line_t, L.id == C.line_id)
        .where(sa.or_(*sides))
    )
    if status:
        stmt = stmt.where(C.status == status)
    if invoice_id:
        stmt = stmt.where(IV.id == invoice_id)
    if after is not None:
        stmt = stmt.where(
            sa.or_(
                rank > after.rank,
                sa.and_(rank == after.rank, C.due_date > after.due_date),
                sa.and_(rank == after.rank, C.due_date == after.due_date, C.seq > after.seq),
            )
        )
    stmt = stmt.order_by(rank, C.due_date, C.seq).limit(limit)
    out = []
    for challenge, invoice, line, row_rank in session.execute(stmt):
        assert challenge.seq is not None
        key = ChallengeKey(int(row_rank), challenge.due_date, challenge.seq)
        out.append((ChallengeRow(challenge, invoice, line), key))
    return out


def latest_challenges(session: Session, line_ids: Sequence[int]) -> dict[int, Challenge]:
    """The most recent challenge of each of these lines that has one."""
    latest: dict[int, Challenge] = {}
    for start in range(0, len(line_ids), IN_CHUNK):
        chunk = list(line_ids[start : start + IN_CHUNK])
        stmt = sa.select(Challenge).where(C.line_id.in_(chunk)).order_by(C.seq)
        for challenge in session.execute(stmt).scalars():
            latest[challenge.line_id] = challenge
    return latest


# --- the work queue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    line: InvoiceLine
    invoice_id: str
    invoice_number: str
    provider_code: str
    submitted_at: datetime


def page_queue(
    session: Session,
    *,
    commissioner_code: str,
    states: Sequence[str],
    reason_code: str | None,
    provider_code: str | None,
    invoice_id: str | None,
    after: tuple[int, int] | None,
    limit: int,
) -> list[QueueRow]:
    """Query lines of the commissioner's validated invoices, oldest invoice first, then by line.

    Invoice by invoice: the validated invoices (the open workload, few) are listed first, then each
    one's query lines are read in line order along the (invoice_seq, line_no) index, until the page
    is full. A single statement over all of them leaves the planner free
    to gather every matching line and sort them for each page, which on an invoice of 100,000
    query lines is the whole invoice sorted per page."""
    invoices = sa.select(IV.seq, IV.id, IV.invoice_number, IV.provider_code, IV.submitted_at).where(
        IV.commissioner_code == commissioner_code, _VALIDATED
    )
    if provider_code:
        invoices = invoices.where(IV.provider_code == provider_code)
    if invoice_id:
        invoices = invoices.where(IV.id == invoice_id)
    if after is not None:
        invoices = invoices.where(IV.seq >= after[0])
    rows: list[QueueRow] = []
    for seq, public_id, number, provider, submitted_at in session.execute(invoices.order_by(IV.seq)).all():
        stmt = sa.select(InvoiceLine).where(L.invoice_seq == seq, _QUERY_LINE, _LINE_STATE.in_(states))
        if reason_code:
            stmt = stmt.where(_carries_reason(reason_code))
        if after is not None and seq == after[0]:
            stmt = stmt.where(L.line_no > after[1])
        stmt = stmt.order_by(L.line_no).limit(limit - len(rows))
        rows += [
            QueueRow(line, public_id, number, provider, submitted_at)
            for line in session.execute(stmt).scalars()
        ]
        if len(rows) >= limit:
            break
    return rows


# --- bulk decisions -----------------------------------------------------------------------------------


def _undecided_with_reason(seq: int, reason_code: str) -> sa.ColumnElement[bool]:
    # The decision and the query state are set together: an undecided line has neither decision.
    return sa.and_(L.invoice_seq == seq, _QUERY_LINE, L.decision.is_(None), _carries_reason(reason_code))


@dataclass(frozen=True)
class Selection:
    lines: int
    claimed_pennies: int
    expected_pennies: int
    without_claimed: int
    without_expected: int


def select_undecided(session: Session, *, seq: int, reason_code: str) -> Selection:
    """How many undecided query lines of the invoice carry the reason, and their amounts."""
    stmt = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(L.claimed_pennies), 0),
        sa.func.coalesce(sa.func.sum(L.expected_pennies), 0),
        sa.func.count() - sa.func.count(L.claimed_pennies),
        sa.func.count() - sa.func.count(L.expected_pennies),
    ).where(_undecided_with_reason(seq, reason_code))
    lines, claimed, expected, no_claimed, no_expected = session.execute(stmt).one()
    return Selection(int(lines), int(claimed), int(expected), int(no_claimed), int(no_expected))


def decide_undecided(
    session: Session,
    *,
    seq: int,
    reason_code: str,
    accept: bool,
    amount_basis: str | None,
    reason: str | None,
    decided_by: str,
    now: datetime,
) -> tuple[int, int]:
    """Decides every undecided query line of the invoice carrying the reason, in two statements,
    as `invoices.service.decide_lines` decides one: the lines' challenges still waiting are closed
    first (while the lines are still undecided, so the same condition finds them), then the lines
    take the decision, its amount and state. Returns (lines decided, challenges closed)."""
    chosen = _undecided_with_reason(seq, reason_code)
    closed = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(challenge_t)
            .where(
                C.invoice_seq == seq,
                C.status != ChallengeStatus.CLOSED,
                C.line_id.in_(sa.select(L.id).where(chosen)),
            )
            .values(status=ChallengeStatus.CLOSED, closed_at=now)
        ),
    )
    amount: Any = None
    if accept:
        amount = L.expected_pennies if amount_basis == "expected" else L.claimed_pennies
    decided = cast(
        "sa.CursorResult[Any]",
        session.execute(
            sa.update(line_t)
            .where(chosen)
            .values(
                decision="accept" if accept else "reject",
                decided_pennies=amount,
                decision_reason=reason,
                decided_by=decided_by,
                decided_at=now,
                query_state=QueryState.ACCEPTED if accept else QueryState.REJECTED,
            )
            .execution_options(synchronize_session=False)
        ),
    )
    return int(decided.rowcount or 0), int(closed.rowcount or 0)
