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
    REJECTED = "rejected"
    # Validation could not finish (e.g. the service restarted mid-way); resubmit the invoice.
    FAILED = "failed"

    OPEN = (RECEIVED, VALIDATING)
    CLOSED = (APPROVED, PART_APPROVED, REJECTED, FAILED)


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
