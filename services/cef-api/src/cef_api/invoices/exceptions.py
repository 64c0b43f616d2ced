"""Domain errors of invoices, each saying what the caller should change."""

from __future__ import annotations

from cef_common.errors import AppError, Conflict, NotFound, Unprocessable


class InvoiceHeaderInvalid(Unprocessable):
    code = "invoice-header-invalid"


class DuplicateInvoice(Conflict):
    code = "duplicate-invoice"


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency-key-reused"


class InvoiceNotReady(Conflict):
    code = "invoice-not-ready"


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


# --- re-identification (invoices/reidentify.py) ---------------------------------------------------


class LineNotFound(NotFound):
    """One answer for a missing invoice, a missing line and a line the caller may not re-identify,
    so that nobody learns which invoices or lines exist by asking."""

    code = "line-not-found"

    def __init__(self) -> None:
        super().__init__(
            "there is no such line on an invoice you can re-identify patients of: use the invoice id and the "
            "line_ref of the line detail you were shown, with a token of CEF staff (invoices:validate) of "
            "the invoice's commissioner"
        )


class PatientTokensPurged(AppError):
    status, code, title = 410, "patient-tokens-purged", "Gone"


class NoPatientToken(Conflict):
    code = "no-patient-token"


class ReasonContainsIdentifier(Unprocessable):
    code = "reason-contains-identifier"


class ReidentificationLimitReached(AppError):
    status, code, title = 429, "reidentification-limit-reached", "Too many requests"


# --- the lifecycle (invoices/lifecycle.py, payments.py, challenges.py) ------------------------------


class InvalidTransition(Conflict):
    """A step the invoice's (or line's, or challenge's) current state does not allow; the detail
    names that state and `extra` carries it with the states the step is allowed from."""

    code = "invalid-transition"


class MessageContainsIdentifier(Unprocessable):
    code = "message-contains-identifier"


class PaymentReferenceReused(Conflict):
    code = "payment-reference-reused"


class PaymentExceedsUnpaid(Unprocessable):
    code = "payment-exceeds-unpaid"
