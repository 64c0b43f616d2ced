"""Payments finance records against approved invoices: never more than is approved and unpaid,
recorded once per payment reference, each moving the invoice to part-paid or paid."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlmodel import Session

from cef_api.invoices import lifecycle, repository
from cef_api.invoices.exceptions import (
    MAX_PENNIES,
    AmountTooLarge,
    PaymentExceedsUnpaid,
    PaymentReferenceReused,
)
from cef_api.invoices.models import Invoice, InvoiceStatus, Payment
from cef_api.invoices.schemas import PaymentIn, PaymentOut, PaymentPage, money, pennies
from cef_api.invoices.service import READ, VALIDATE, get_invoice
from cef_api.locks import transaction_lock
from cef_common.auth import Principal
from cef_common.errors import Forbidden, Unprocessable
from cef_common.redact import carries_identifier


@dataclass
class Recorded:
    payment: PaymentOut
    replayed: bool


def _finance_invoice(session: Session, principal: Principal, invoice_id: str) -> Invoice:
    invoice, _ = get_invoice(session, principal=principal, invoice_id=invoice_id)
    if not (principal.has(READ) and (principal.org or "").upper() == invoice.commissioner_code):
        raise Forbidden(
            "recording a payment needs the scope invoices:read (finance) of the invoice's commissioner",
            code="insufficient-scope",
        )
    return invoice


def payment_out(invoice: Invoice, payment: Payment) -> PaymentOut:
    approved = invoice.approved_pennies or 0
    return PaymentOut(
        invoice_id=invoice.id,
        reference=payment.reference,
        amount=money(payment.amount_pennies) or "0.00",
        paid_on=payment.paid_on,
        recorded_at=payment.recorded_at,
        recorded_by=payment.recorded_by,
        invoice_status=invoice.status,
        approved_amount=money(approved) or "0.00",
        paid_amount=money(invoice.paid_pennies) or "0.00",
        unpaid_amount=money(approved - invoice.paid_pennies) or "0.00",
    )


def record_payment(
    session: Session, *, principal: Principal, invoice_id: str, payment: PaymentIn, today: date | None = None
) -> Recorded:
    """Records one payment, or answers again the payment recorded before under the same reference."""
    invoice = _finance_invoice(session, principal, invoice_id)
    if carries_identifier(payment.reference):
        raise Unprocessable(
            "the payment reference looks like an NHS number, a date or a postcode; give the ledger's "
            "own payment reference",
            code="reference-contains-identifier",
            refusal=True,
        )
    amount = pennies(Decimal(payment.amount))
    if amount <= 0:
        raise Unprocessable("a payment's amount must be more than 0.00", code="payment-amount-invalid")
    if amount > MAX_PENNIES:
        raise AmountTooLarge("the payment's amount")
    if payment.paid_on > (today or datetime.now(UTC).date()):
        raise Unprocessable(
            "paid_on is in the future; record a payment once it is made, with the date it was paid",
            code="payment-date-invalid",
        )
    assert invoice.seq is not None
    # One payment of an invoice at a time, on every instance: the lock, then a write first (SQLite
    # holds its one writer from the first write), then the invoice read again under both.
    transaction_lock(session, f"invoice:{invoice.seq}")
    repository.update_invoice(session, invoice.seq, paid_pennies=Invoice.paid_pennies)
    session.refresh(invoice)
    earlier = repository.payment_by_reference(session, invoice.seq, payment.reference)
    if earlier is not None:
        if earlier.amount_pennies != amount or earlier.paid_on != payment.paid_on:
            raise PaymentReferenceReused(
                f"payment reference {payment.reference} was recorded on this invoice before with another "
                f"amount or date (£{money(earlier.amount_pennies)} paid on {earlier.paid_on.isoformat()}); "
                "a new payment needs a new reference",
                refusal=True,
            )
        return Recorded(payment_out(invoice, earlier), replayed=True)
    lifecycle.ensure_invoice_step(invoice, InvoiceStatus.PAID)
    unpaid = (invoice.approved_pennies or 0) - invoice.paid_pennies
    if amount > unpaid:
        raise PaymentExceedsUnpaid(
            f"the payment (£{money(amount)}) is more than is approved and still unpaid on this invoice "
            f"(£{money(unpaid)}); record at most £{money(unpaid)}",
            extra={"unpaid_amount": money(unpaid)},
            refusal=True,
        )
    number = len(repository.payments_of(session, invoice.seq)) + 1
    row = Payment(
        invoice_seq=invoice.seq,
        reference=payment.reference,
        amount_pennies=amount,
        paid_on=payment.paid_on,
        recorded_by=principal.sub[:200],
        recorded_at=datetime.now(UTC),
    )
    session.add(row)
    invoice.paid_pennies += amount
    target = (
        InvoiceStatus.PAID if invoice.paid_pennies == invoice.approved_pennies else InvoiceStatus.PART_PAID
    )
    number = len(repository.payments_of(session, invoice.seq)) + 1
    lifecycle.move_invoice(
        session,
        invoice,
        target,
        principal=principal,
        type="invoice.payment",
        action="create",
        detail={
            "reference": payment.reference,  # refused above when it looked like an identifier
            "payment": number,
            "amount": money(amount),
            # No paid_on: the audit log refuses anything shaped like a date of birth in an event.
            "paid_amount": money(invoice.paid_pennies),
            "unpaid_amount": money((invoice.approved_pennies or 0) - invoice.paid_pennies),
        },
    )
    session.flush()
    return Recorded(payment_out(invoice, row), replayed=False)


def list_payments(session: Session, *, principal: Principal, invoice_id: str) -> PaymentPage:
    invoice, _ = get_invoice(session, principal=principal, invoice_id=invoice_id)
    org = (principal.org or "").upper()
    if not ((principal.has(READ) or principal.has(VALIDATE)) and org == invoice.commissioner_code):
        raise Forbidden(
            "payments are the commissioner's: they need invoices:read or invoices:validate of the "
            "invoice's commissioner",
            code="insufficient-scope",
        )
    assert invoice.seq is not None
    return PaymentPage(items=[payment_out(invoice, p) for p in repository.payments_of(session, invoice.seq)])
