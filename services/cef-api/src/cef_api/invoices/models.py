"""Tables of invoices and their line outcomes (tokens at most, never an identifier)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel


class InvoiceStatus:
    RECEIVED = "received"
    VALIDATING = "validating"
    VALIDATED = "validated"
    APPROVED = "approved"
    PART_APPROVED = "part-approved"
    # Approved with nothing payable: every line was rejected.
    REJECTED = "rejected"
    PART_PAID = "part-paid"
    PAID = "paid"
    # Validation could not finish (e.g. the service restarted mid-way); resubmit the invoice.
    FAILED = "failed"
    # The provider took it back before approval; its lines never count as earlier lines.
    WITHDRAWN = "withdrawn"

    OPEN = (RECEIVED, VALIDATING)
    CLOSED = (APPROVED, PART_APPROVED, REJECTED, PART_PAID, PAID, FAILED, WITHDRAWN)
    # Approved, with money still to pay or paid.
    PAYABLE = (APPROVED, PART_APPROVED, PART_PAID)
    ALL = (
        RECEIVED,
        VALIDATING,
        VALIDATED,
        APPROVED,
        PART_APPROVED,
        REJECTED,
        PART_PAID,
        PAID,
        FAILED,
        WITHDRAWN,
    )


class QueryState:
    """Where a query line is in its resolution (invoice_line.query_state; NULL is QUERY)."""

    QUERY = "query"
    CHALLENGED = "challenged"
    RESPONDED = "responded"
    ACCEPTED = "accepted"
    REJECTED = "rejected"

    UNDECIDED = (QUERY, CHALLENGED, RESPONDED)
    ALL = (QUERY, CHALLENGED, RESPONDED, ACCEPTED, REJECTED)


class ChallengeStatus:
    OPEN = "open"  # waiting for the provider
    RESPONDED = "responded"  # the provider answered; staff decide the line
    CLOSED = "closed"  # the line was decided, or the invoice withdrawn, before an answer

    ALL = (OPEN, RESPONDED, CLOSED)


class Invoice(SQLModel, table=True):
    __tablename__ = "invoice"

    # Internal order of submission; `id` is the public identifier.
    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=36, unique=True)
    invoice_number: str = Field(max_length=64)
    provider_code: str = Field(max_length=12)
    commissioner_code: str = Field(max_length=12)
    invoice_date: date
    period_start: date
    period_end: date
    status: str = Field(max_length=20)
    submitted_at: datetime
    submitted_by: str = Field(max_length=200)
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str = Field(max_length=64)
    backing_bytes: int = Field(sa_type=BigInteger)
    background: bool = False
    lines_done: int = 0
    lines: int = 0
    valid: int = 0
    query: int = 0
    rejected: int = 0
    # Money in pennies is BIGINT (as the migration made it): an invoice passes £21,474,836.47.
    claimed_pennies: int = Field(default=0, sa_type=BigInteger)
    validated_pennies: int = Field(default=0, sa_type=BigInteger)
    approved_pennies: int | None = Field(default=None, sa_type=BigInteger)
    reference_versions: str = Field(default="{}", max_length=2000)
    failure_reason: str | None = Field(default=None, max_length=1000)
    validated_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = Field(default=None, max_length=200)
    purged_at: datetime | None = None
    # Payments recorded against the approved amount (migration 0006).
    paid_pennies: int = Field(default=0, sa_type=BigInteger)
    # The reference finance books the approved amount under: set at approval, never reused.
    ledger_reference: str | None = Field(default=None, max_length=40)
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = Field(default=None, max_length=200)
    withdraw_reason: str | None = Field(default=None, max_length=500)


class InvoiceLine(SQLModel, table=True):
    __tablename__ = "invoice_line"

    id: int | None = Field(default=None, primary_key=True)
    invoice_seq: int = Field(foreign_key="invoice.seq")
    line_no: int
    line_ref: str | None = Field(default=None, max_length=100)
    outcome: str = Field(max_length=10)
    reasons: str = Field(default="", max_length=400)
    responsible_commissioner: str | None = Field(default=None, max_length=12)
    expected_pennies: int | None = Field(default=None, sa_type=BigInteger)
    claimed_pennies: int | None = Field(default=None, sa_type=BigInteger)
    nhs_token: str | None = Field(default=None, max_length=128)
    # The tokens of the line's date of birth and postcode as the provider sent them (migration
    # 0004): what re-identifying the line's patient gives back; removed with nhs_token on purge.
    dob_token: str | None = Field(default=None, max_length=128)
    postcode_token: str | None = Field(default=None, max_length=128)
    activity_date: date | None = None
    hrg_code: str | None = Field(default=None, max_length=12)
    point_of_delivery: str | None = Field(default=None, max_length=8)
    service_code: str | None = Field(default=None, max_length=20)
    # A digest of the line's duplicate key (provider, commissioner, patient token, date, HRG,
    # point of delivery) when the line counts for later duplicates; removed with the token on purge.
    dup_key: str | None = Field(default=None, max_length=64)
    decision: str | None = Field(default=None, max_length=10)
    decided_pennies: int | None = Field(default=None, sa_type=BigInteger)
    decision_reason: str | None = Field(default=None, max_length=1000)
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = None
    # A query line's state (QueryState); NULL on a query line is QueryState.QUERY (validation
    # writes none), and on other lines it stays NULL.
    query_state: str | None = Field(default=None, max_length=12)


class Challenge(SQLModel, table=True):
    """A question from CEF staff to the provider about one query line, and the provider's answer.
    Messages are free text checked for identifier shapes before they are stored."""

    __tablename__ = "challenge"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=36, unique=True)
    invoice_seq: int = Field(foreign_key="invoice.seq")
    line_id: int = Field(foreign_key="invoice_line.id")
    line_ref: str = Field(max_length=100)
    # Copied from the invoice, so that each side's list is one indexed look-up.
    provider_code: str = Field(max_length=12)
    commissioner_code: str = Field(max_length=12)
    status: str = Field(max_length=12)
    message: str = Field(max_length=2000)
    raised_by: str = Field(max_length=200)
    raised_at: datetime
    due_date: date
    response_message: str | None = Field(default=None, max_length=2000)
    corrected_pennies: int | None = Field(default=None, sa_type=BigInteger)
    responded_by: str | None = Field(default=None, max_length=200)
    responded_at: datetime | None = None
    closed_at: datetime | None = None


class Payment(SQLModel, table=True):
    """Money finance recorded as paid against an approved invoice; one row per payment reference."""

    __tablename__ = "payment"

    id: int | None = Field(default=None, primary_key=True)
    invoice_seq: int = Field(foreign_key="invoice.seq")
    reference: str = Field(max_length=64)
    amount_pennies: int = Field(sa_type=BigInteger)
    paid_on: date
    recorded_by: str = Field(max_length=200)
    recorded_at: datetime


class Reidentification(SQLModel, table=True):
    """One re-identification of a line's patient by a person: the durable count behind the
    per-person daily limit, written in the same transaction as its audit event. Codes and ids only."""

    __tablename__ = "reidentification"

    id: int | None = Field(default=None, primary_key=True)
    invoice_seq: int = Field(foreign_key="invoice.seq")
    line_ref: str = Field(max_length=100)
    person_sub: str = Field(max_length=255)
    person_issuer: str = Field(max_length=255)
    org: str = Field(max_length=12)
    purpose: str = Field(max_length=40)
    at: datetime
