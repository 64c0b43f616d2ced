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


# The largest amount the CEF stores: pennies are a signed 64-bit integer on both databases.
MAX_PENNIES = 2**63 - 1


class AmountTooLarge(Unprocessable):
    """An amount (or an invoice's total) that the amount pattern allows but no column can hold."""

    code = "amount-too-large"

    def __init__(self, what: str) -> None:
        largest = f"£{MAX_PENNIES // 100:,}.{MAX_PENNIES % 100:02d}"
        super().__init__(
            f"{what} is beyond the largest amount the CEF stores ({largest}); "
            "correct the amount and submit the invoice again"
        )
