"""The invoice and query-line state machines: which step each state allows, one audit event per
transition, and a 409 naming the current state for any step it does not allow (docs/lifecycle.md).

Invoice: received -> validating -> validated -> approved | part-approved | rejected -> part-paid ->
paid; received | validating -> failed; validated -> withdrawn. A query line: query -> challenged ->
responded (-> challenged again) and query | challenged | responded -> accepted | rejected."""

from __future__ import annotations

from typing import Any, Final, Protocol

from sqlmodel import Session

from cef_api.invoices.audit import record_invoice_event
from cef_api.invoices.exceptions import InvalidTransition, MessageContainsIdentifier
from cef_api.invoices.models import Invoice, InvoiceLine, InvoiceStatus, QueryState
from cef_common.audit import AuditAction
from cef_common.auth import Principal
from cef_common.redact import identifiers_in_free_text

S = InvoiceStatus

# Each invoice status and the statuses it may move to.
INVOICE_TRANSITIONS: Final[dict[str, tuple[str, ...]]] = {
    S.RECEIVED: (S.VALIDATING, S.FAILED),
    S.VALIDATING: (S.VALIDATED, S.FAILED),
    S.VALIDATED: (S.APPROVED, S.PART_APPROVED, S.REJECTED, S.WITHDRAWN),
    S.APPROVED: (S.PART_PAID, S.PAID),
    S.PART_APPROVED: (S.PART_PAID, S.PAID),
    S.PART_PAID: (S.PART_PAID, S.PAID),
    S.REJECTED: (),
    S.PAID: (),
    S.FAILED: (),
    S.WITHDRAWN: (),
}

Q = QueryState
LINE_TRANSITIONS: Final[dict[str, tuple[str, ...]]] = {
    Q.QUERY: (Q.CHALLENGED, Q.ACCEPTED, Q.REJECTED),
    Q.CHALLENGED: (Q.RESPONDED, Q.ACCEPTED, Q.REJECTED),
    Q.RESPONDED: (Q.CHALLENGED, Q.ACCEPTED, Q.REJECTED),
    Q.ACCEPTED: (),
    Q.REJECTED: (),
}

# What each step is called in a refusal ("the invoice is approved; it can be withdrawn only ...").
_STEP_NAMES: Final = {
    S.WITHDRAWN: "withdrawn",
    S.APPROVED: "approved",
    S.PART_APPROVED: "approved",
    S.REJECTED: "approved",
    S.PART_PAID: "paid",
    S.PAID: "paid",
    Q.CHALLENGED: "challenged",
    Q.RESPONDED: "answered",
    Q.ACCEPTED: "decided",
}


def allowed_from(transitions: dict[str, tuple[str, ...]], target: str) -> list[str]:
    return [state for state, targets in transitions.items() if target in targets]


def ensure_invoice_step(invoice: Invoice, *targets: str) -> None:
    """Refuses (409, invalid-transition) unless the invoice may move to one of `targets`."""
    if any(t in INVOICE_TRANSITIONS.get(invoice.status, ()) for t in targets):
        return
    sources = sorted({s for t in targets for s in allowed_from(INVOICE_TRANSITIONS, t)})
    step = _STEP_NAMES.get(targets[0], targets[0])
    raise InvalidTransition(
        f"the invoice is {invoice.status}; it can be {step} only when it is {' or '.join(sources)}",
        extra={"state": invoice.status, "allowed_from": sources},
        refusal=True,
    )


def move_invoice(
    session: Session,
    invoice: Invoice,
    target: str,
    *,
    principal: Principal | None,
    type: str,
    action: AuditAction = "update",
    detail: dict[str, Any] | None = None,
) -> None:
    """Moves the invoice to `target` (checked) and records the transition in the same transaction."""
    ensure_invoice_step(invoice, target)
    before = invoice.status
    invoice.status = target
    session.add(invoice)
    record_invoice_event(
        session,
        action=action,
        type=type,
        principal=principal,
        entity_id=invoice.id,
        detail={"from": before, "to": target, **(detail or {})},
    )


class QueryLine(Protocol):
    """A line as a table row or an ORM object: what its state is read from."""

    @property
    def outcome(self) -> str: ...
    @property
    def query_state(self) -> str | None: ...


def line_state(line: QueryLine) -> str:
    """The state of a query line (QueryState); NULL is a query nobody has touched."""
    return line.query_state or Q.QUERY


def ensure_line_step(line: InvoiceLine, target: str, *, line_ref: str) -> None:
    """Refuses (409, invalid-transition) unless the query line may move to `target`."""
    state = line_state(line)
    if line.outcome != "query":
        raise InvalidTransition(
            f"line {line_ref} is {line.outcome}; only query lines are challenged or decided",
            extra={"state": line.outcome, "allowed_from": allowed_from(LINE_TRANSITIONS, target)},
            refusal=True,
        )
    if target in LINE_TRANSITIONS[state]:
        return
    sources = allowed_from(LINE_TRANSITIONS, target)
    step = _STEP_NAMES.get(target, target)
    raise InvalidTransition(
        f"line {line_ref} is {state}; it can be {step} only when it is {' or '.join(sources)}",
        extra={"state": state, "allowed_from": sources},
        refusal=True,
    )


def ensure_no_identifier(text: str | None, *, field: str) -> None:
    """Refuses (422) free text a person wrote that holds something shaped like an NHS number, a date
    or a postcode: it is kept and shown to the other party as it is. The text is never quoted."""
    if not text:
        return
    found = identifiers_in_free_text(text)
    if found:
        raise MessageContainsIdentifier(
            f"the {field} seems to hold {' and '.join(found)}; it is kept and shown as written, so it "
            "must not identify anyone: refer to the line by its line_ref and describe the problem "
            "without the patient's details",
            extra={"errors": [{"field": field, "message": f"must not contain {' or '.join(found)}"}]},
            refusal=True,
        )
