"""Domain errors of invoices, each saying what the caller should change."""

from __future__ import annotations

from cef_common.errors import Conflict, Unprocessable


class InvoiceHeaderInvalid(Unprocessable):
    code = "invoice-header-invalid"


class DuplicateInvoice(Conflict):
    code = "duplicate-invoice"


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency-key-reused"


class InvoiceNotReady(Conflict):
    code = "invoice-not-ready"


class LineNotDecidable(Conflict):
    code = "line-not-decidable"


class QueriesPending(Conflict):
    code = "queries-pending"
