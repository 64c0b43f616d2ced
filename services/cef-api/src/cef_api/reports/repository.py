"""The queries behind reports: lines are counted and summed by the database (GROUP BY), never
loaded one by one, so that a report over millions of lines costs one pass of the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlmodel import Session

from cef_api.invoices.models import Invoice, InvoiceLine, InvoiceStatus

ReportBy = Literal["month", "provider", "point_of_delivery", "reason"]
OUTCOMES: Final = ("valid", "query", "rejected")

# Invoices whose lines a report counts: validated, and not taken back. Never received or
# validating (outcomes not final), failed (never validated) or withdrawn (never to be paid).
REPORTED_STATUSES: Final = (
    InvoiceStatus.VALIDATED,
    InvoiceStatus.APPROVED,
    InvoiceStatus.PART_APPROVED,
    InvoiceStatus.REJECTED,
    InvoiceStatus.PART_PAID,
    InvoiceStatus.PAID,
)

invoice_t: sa.Table = Invoice.__table__  # type: ignore[attr-defined]
line_t: sa.Table = InvoiceLine.__table__  # type: ignore[attr-defined]
IV = invoice_t.c
L = line_t.c


@dataclass(frozen=True)
class Group:
    """Lines of one key and outcome: `key` is the raw grouping value (None: the lines have none)."""

    key: str | None
    outcome: str
    lines: int
    claimed_pennies: int


def outcome_groups(
    session: Session,
    *,
    commissioner_code: str,
    by: ReportBy,
    first_day: date | None,
    end_day: date | None,
) -> list[Group]:
    """Counts and claimed sums of the reported lines addressed to `commissioner_code`, by `by` and
    outcome, of activity dates in [first_day, end_day) when given. For `reason` the key is a line's
    whole `reasons` string: its codes are split by the caller (distinct combinations are few)."""
    key_columns: Sequence[Any]
    if by == "month":
        key_columns = (sa.extract("year", L.activity_date), sa.extract("month", L.activity_date))
    elif by == "provider":
        key_columns = (IV.provider_code,)
    elif by == "point_of_delivery":
        key_columns = (L.point_of_delivery,)
    else:
        key_columns = (L.reasons,)
    labelled = [column.label(f"k{i}") for i, column in enumerate(key_columns)]
    stmt = (
        sa.select(
            *labelled,
            L.outcome,
            sa.func.count().label("lines"),
            sa.func.coalesce(sa.func.sum(L.claimed_pennies), 0).label("claimed"),
        )
        .select_from(line_t.join(invoice_t, IV.seq == L.invoice_seq))
        .where(
            IV.commissioner_code == commissioner_code,
            IV.status.in_(REPORTED_STATUSES),
            L.outcome.in_(OUTCOMES),
        )
        .group_by(*labelled, L.outcome)
    )
    if first_day is not None:
        stmt = stmt.where(L.activity_date >= first_day)
    if end_day is not None:
        stmt = stmt.where(L.activity_date < end_day)
    groups = []
    for row in session.execute(stmt):
        *keys, outcome, lines, claimed = row
        groups.append(Group(_key(by, keys), str(outcome), int(lines), int(claimed)))
    return groups


def _key(by: ReportBy, keys: list[Any]) -> str | None:
    if by == "month":
        year, month = keys
        return None if year is None or month is None else f"{int(year):04d}-{int(month):02d}"
    (value,) = keys
    return None if value is None else str(value)
