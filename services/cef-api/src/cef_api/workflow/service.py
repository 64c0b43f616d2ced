"""Challenges to the provider, the staff work queue and bulk decisions on query lines.
Keyword-only arguments, no HTTP types; errors are `AppError`s saying what to change.

A challenge asks the provider about one query line (the line becomes `challenged`); the provider's
answer makes it `responded`; staff may challenge it again or decide it, which closes whatever
challenge still waits on it (docs/lifecycle.md). Messages are shown to the other party as written,
so they are refused when they hold anything shaped like an identifier, and no audit event ever
holds one: only its length."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from cef_api.invoices import lifecycle
from cef_api.invoices import repository as invoice_repository
from cef_api.invoices.audit import SOURCE, record_invoice_event
from cef_api.invoices.exceptions import MAX_PENNIES, AmountTooLarge, InvalidTransition
from cef_api.invoices.models import Challenge, ChallengeStatus, Invoice, QueryState
from cef_api.invoices.schemas import line_money, money, pennies
from cef_api.invoices.service import (
    MAX_PAGE,
    SUBMIT,
    VALIDATE,
    _ensure_deciding,
    _staff_invoice,
    line_reasons,
)
from cef_api.locks import transaction_lock
from cef_api.reasons.catalogue import explain_lines
from cef_api.workflow import repository
from cef_api.workflow.repository import ChallengeKey, ChallengeRow
from cef_api.workflow.schemas import (
    BulkDecisionIn,
    BulkDecisionOut,
    ChallengeIn,
    ChallengeLineOut,
    ChallengeOut,
    ChallengePage,
    ChallengeResponseIn,
    QueueChallengeOut,
    QueueItem,
    QueuePage,
)
from cef_common.audit import build_event, record_event
from cef_common.auth import Principal
from cef_common.errors import BadRequest, Forbidden, NotFound, NotVisible, Unprocessable
from cef_common.params import MAX_INTEGER, decimal_cursor
from cef_common.redact import carries_identifier, digest, is_uuid

CHALLENGE_ENTITY = "invoice-challenge"

# Said alike of a challenge that does not exist and of one the caller may not see.
NO_SUCH_CHALLENGE = (
    "there is no challenge with this id among those the caller may see (providers see the challenges "
    "of their own invoices, CEF staff those of invoices addressed to their commissioner); use the id "
    "returned when the challenge was raised or listed"
)


def _today() -> date:
    return datetime.now(UTC).date()


def _org(principal: Principal) -> str:
    org = (principal.org or "").upper()
    if not org:
        raise Forbidden("the token names no organisation (org claim)", code="no-organisation")
    return org


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", code="bad-limit")
    return limit


def _bad_cursor() -> BadRequest:
    return BadRequest(
        "cursor is not valid: pass the next_cursor of the previous page unchanged",
        code="bad-cursor",
        extra={"errors": [{"field": "cursor", "message": "not a cursor this service issued"}]},
    )


def recorded_line_ref(line_ref: str | None) -> str | dict[str, Any] | None:
    """A stored line_ref as an audit event may hold it: itself, or a digest when it carries
    something shaped like an identifier among other text (one that is nothing but an identifier is
    never stored)."""
    if line_ref is None or not carries_identifier(line_ref):
        return line_ref
    return digest(line_ref)


# --- challenges -------------------------------------------------------------------------------------


def _overdue(challenge: Challenge, today: date) -> bool:
    return challenge.status == ChallengeStatus.OPEN and challenge.due_date < today


def challenge_out(row: ChallengeRow, *, today: date) -> ChallengeOut:
    challenge, invoice, line = row.challenge, row.invoice, row.line
    return ChallengeOut(
        id=challenge.id,
        invoice_id=invoice.id,
        invoice_number=invoice.invoice_number,
        provider_code=challenge.provider_code,
        commissioner_code=challenge.commissioner_code,
        line_ref=challenge.line_ref,
        line=ChallengeLineOut(
            outcome=line.outcome,
            reasons=line_reasons(line),
            expected_amount=line_money(line.expected_pennies),
            claimed_amount=line_money(line.claimed_pennies),
            state=lifecycle.line_state(line),  # type: ignore[arg-type]
        ),
        message=challenge.message,
        raised_at=challenge.raised_at,
        due_date=challenge.due_date,
        overdue=_overdue(challenge, today),
        status=challenge.status,  # type: ignore[arg-type]
        response_message=challenge.response_message,
        corrected_amount=line_money(challenge.corrected_pennies),
        responded_at=challenge.responded_at,
    )


def _challenge_event(
    session: Session,
    principal: Principal,
    *,
    type: str,
    action: str,
    invoice: Invoice,
    challenge: Challenge,
    detail: dict[str, Any],
) -> None:
    record_event(
        session,
        build_event(
            source=SOURCE,
            action=action,  # type: ignore[arg-type]
            type=type,
            outcome="success",
            principal=principal,
            entity_type=CHALLENGE_ENTITY,
            entity_id=f"{invoice.id}/challenge/{challenge.id}",
            # invoice_id lets the audit service show the challenge in the invoice's history.
            detail={"invoice_id": invoice.id, **detail},
        ),
    )


def _hold_invoice(session: Session, invoice: Invoice) -> None:
    """One change to an invoice's lines at a time, on every instance: the lock, then a write first
    (SQLite holds its one writer from the first write), then the invoice read again under both."""
    assert invoice.seq is not None
    transaction_lock(session, f"invoice:{invoice.seq}")
    invoice_repository.update_invoice(session, invoice.seq, status=Invoice.status)
    session.refresh(invoice)


def raise_challenge(
    session: Session,
    *,
    principal: Principal,
    invoice_id: str,
    line_ref: str,
    body: ChallengeIn,
    default_due_days: int,
    today: date | None = None,
) -> ChallengeOut:
    """Staff of the invoice's commissioner ask its provider about one query line."""
    today = today or _today()
    invoice = _staff_invoice(session, principal, invoice_id)
    _hold_invoice(session, invoice)
    _ensure_deciding(invoice)
    assert invoice.seq is not None
    line = invoice_repository.line_by_ref(session, invoice.seq, line_ref)
    if line is None or line.line_ref is None:
        # The line_ref is the caller's text until a line answers to it: never quoted.
        raise NotFound(
            f"invoice {invoice.invoice_number} has no line with that line_ref; "
            "use a line_ref of its line detail or of the work queue"
        )
    before = lifecycle.line_state(line)
    lifecycle.ensure_line_step(line, QueryState.CHALLENGED, line_ref=line.line_ref)
    lifecycle.ensure_no_identifier(body.message, field="message")
    due_date = body.due_date or today + timedelta(days=default_due_days)
    if due_date < today:
        raise Unprocessable(
            f"due_date is before today ({today.isoformat()}); give today or a later date, or leave it "
            "out for the default",
            code="due-date-in-past",
            extra={"errors": [{"field": "due_date", "message": "must be today or later"}]},
        )
    now = datetime.now(UTC)
    assert line.id is not None
    # An answered challenge is superseded by the new one (nothing else waits on a query or
    # responded line): it no longer waits for anyone.
    invoice_repository.close_challenges(session, [line.id], now)
    challenge = Challenge(
        id=str(uuid.uuid4()),
        invoice_seq=invoice.seq,
        line_id=line.id,
        line_ref=line.line_ref,
        provider_code=invoice.provider_code,
        commissioner_code=invoice.commissioner_code,
        status=ChallengeStatus.OPEN,
        message=body.message,
        raised_by=principal.sub[:200],
        raised_at=now,
        due_date=due_date,
    )
    session.add(challenge)
    line.query_state = QueryState.CHALLENGED
    session.add(line)
    _challenge_event(
        session,
        principal,
        type="invoice.line.challenge",
        action="create",
        invoice=invoice,
        challenge=challenge,
        detail={
            "line_ref": recorded_line_ref(line.line_ref),
            "from": before,
            "to": QueryState.CHALLENGED,
            # Days, not the date: the audit log refuses anything shaped like a date of birth.
            "due_in_days": (due_date - today).days,
            "message_length": len(body.message),
        },
    )
    session.flush()
    return challenge_out(ChallengeRow(challenge, invoice, line), today=today)


def _visible(principal: Principal, challenge: Challenge) -> bool:
    org = (principal.org or "").upper()
    return (principal.has(SUBMIT) and org == challenge.provider_code) or (
        principal.has(VALIDATE) and org == challenge.commissioner_code
    )


def _find_challenge(session: Session, principal: Principal, challenge_id: str) -> ChallengeRow:
    row = repository.challenge_by_id(session, challenge_id) if len(challenge_id) <= 36 else None
    if row is None:
        raise NotFound(NO_SUCH_CHALLENGE)
    if not _visible(principal, row.challenge):
        raise NotVisible(NO_SUCH_CHALLENGE)
    return row


def get_challenge(
    session: Session, *, principal: Principal, challenge_id: str, today: date | None = None
) -> ChallengeOut:
    return challenge_out(_find_challenge(session, principal, challenge_id), today=today or _today())


_CHALLENGE_CURSOR = re.compile(r"^([01])\.([0-9]{8})\.([0-9]{1,10})$")


def _challenge_cursor(raw: str | None) -> ChallengeKey | None:
    if not raw:
        return None
    found = _CHALLENGE_CURSOR.match(raw)
    if found is None or int(found[3]) > MAX_INTEGER:
        raise _bad_cursor()
    try:
        due = datetime.strptime(found[2], "%Y%m%d").date()
    except ValueError:
        raise _bad_cursor() from None
    return ChallengeKey(int(found[1]), due, int(found[3]))


def _challenge_cursor_of(key: ChallengeKey) -> str:
    return f"{key.rank}.{key.due_date:%Y%m%d}.{key.seq}"


def list_challenges(
    session: Session,
    *,
    principal: Principal,
    status: str | None,
    invoice_id: str | None,
    limit: int,
    cursor: str | None,
    today: date | None = None,
) -> ChallengePage:
    """The challenges of the caller's invoices: a provider's own, or those of invoices addressed to
    the staff's commissioner (both for a token with both scopes); overdue ones first."""
    today = today or _today()
    org = _org(principal)
    limit = _limit(limit)
    rows = repository.page_challenges(
        session,
        provider_code=org if principal.has(SUBMIT) else None,
        commissioner_code=org if principal.has(VALIDATE) else None,
        status=status,
        invoice_id=invoice_id,
        today=today,
        after=_challenge_cursor(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    next_cursor = _challenge_cursor_of(page[-1][1]) if len(rows) > limit else None
    items = [challenge_out(row, today=today) for row, _ in page]
    return ChallengePage(
        items=items,
        next_cursor=next_cursor,
        reasons_explained=explain_lines(item.line.reasons for item in items),
    )


def respond(
    session: Session,
    *,
    principal: Principal,
    challenge_id: str,
    body: ChallengeResponseIn,
    today: date | None = None,
) -> ChallengeOut:
    """The provider of the invoice answers an open challenge, optionally with a corrected amount."""
    found = _find_challenge(session, principal, challenge_id)
    challenge, invoice, line = found.challenge, found.invoice, found.line
    org = (principal.org or "").upper()
    if not (principal.has(SUBMIT) and org == challenge.provider_code):
        raise Forbidden(
            "only the provider of the invoice (invoices:submit) answers its challenges",
            code="insufficient-scope",
        )
    _hold_invoice(session, invoice)
    session.refresh(challenge)
    session.refresh(line)
    if challenge.status != ChallengeStatus.OPEN:
        raise InvalidTransition(
            f"the challenge is {challenge.status}; it can be answered only when it is open",
            extra={"state": challenge.status, "allowed_from": [ChallengeStatus.OPEN]},
            refusal=True,
        )
    _ensure_deciding(invoice)
    before = lifecycle.line_state(line)
    lifecycle.ensure_line_step(line, QueryState.RESPONDED, line_ref=challenge.line_ref)
    lifecycle.ensure_no_identifier(body.message, field="message")
    corrected: int | None = None
    if body.corrected_amount is not None:
        corrected = pennies(Decimal(body.corrected_amount))
        if corrected > MAX_PENNIES:
            raise AmountTooLarge("the corrected amount")
    challenge.status = ChallengeStatus.RESPONDED
    challenge.response_message = body.message
    challenge.corrected_pennies = corrected
    challenge.responded_by = principal.sub[:200]
    challenge.responded_at = datetime.now(UTC)
    session.add(challenge)
    line.query_state = QueryState.RESPONDED
    session.add(line)
    _challenge_event(
        session,
        principal,
        type="invoice.line.challenge.response",
        action="update",
        invoice=invoice,
        challenge=challenge,
        detail={
            "from": before,
            "to": QueryState.RESPONDED,
            "corrected_amount": money(corrected),
            "message_length": len(body.message),
        },
    )
    session.flush()
    return challenge_out(found, today=today or _today())


# --- the work queue ---------------------------------------------------------------------------------

_QUEUE_CURSOR = re.compile(r"^([0-9]{1,10})\.([0-9]{1,10})$")


def _queue_cursor(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    found = _QUEUE_CURSOR.match(raw)
    if found is None:
        raise _bad_cursor()
    seq = decimal_cursor(found[1], maximum=MAX_INTEGER)
    line_no = decimal_cursor(found[2], maximum=MAX_INTEGER)
    assert seq is not None
    assert line_no is not None
    return seq, line_no


def _recorded_filter(value: str | None) -> str | dict[str, Any] | None:
    """A filter value the caller typed, as an audit event may hold it."""
    if value is None or not carries_identifier(value):
        return value
    return digest(value)


def work_queue(
    session: Session,
    *,
    principal: Principal,
    reason: str | None,
    provider_code: str | None,
    invoice_id: str | None,
    state: str | None,
    limit: int,
    cursor: str | None,
    today: date | None = None,
) -> QueuePage:
    """Query lines of validated invoices addressed to the staff's commissioner, oldest invoice first,
    undecided ones unless `state` names another. One audit event per page read."""
    today = today or _today()
    org = _org(principal)
    limit = _limit(limit)
    provider_code = provider_code.upper() if provider_code else None
    states = [state] if state else list(QueryState.UNDECIDED)
    rows = repository.page_queue(
        session,
        commissioner_code=org,
        states=states,
        reason_code=reason,
        provider_code=provider_code,
        invoice_id=invoice_id,
        after=_queue_cursor(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    last = page[-1].line if page else None
    next_cursor = f"{last.invoice_seq}.{last.line_no}" if last is not None and len(rows) > limit else None
    challenges = repository.latest_challenges(session, [r.line.id for r in page if r.line.id is not None])
    items = []
    for row in page:
        line = row.line
        challenge = challenges.get(line.id) if line.id is not None else None
        items.append(
            QueueItem(
                invoice_id=row.invoice_id,
                invoice_number=row.invoice_number,
                provider_code=row.provider_code,
                line_ref=line.line_ref,
                line_no=line.line_no,
                state=lifecycle.line_state(line),  # type: ignore[arg-type]
                reasons=line_reasons(line),
                expected_amount=line_money(line.expected_pennies),
                claimed_amount=line_money(line.claimed_pennies),
                activity_date=line.activity_date,
                hrg_code=line.hrg_code,
                point_of_delivery=line.point_of_delivery,
                submitted_at=row.submitted_at,
                age_days=(today - row.submitted_at.date()).days,
                challenge=QueueChallengeOut(
                    id=challenge.id,
                    status=challenge.status,  # type: ignore[arg-type]
                    due_date=challenge.due_date,
                    overdue=_overdue(challenge, today),
                )
                if challenge is not None
                else None,
            )
        )
    record_invoice_event(
        session,
        action="read",
        type="invoice.queries.read",
        principal=principal,
        entity_id=invoice_id if invoice_id and is_uuid(invoice_id) else None,
        count=len(items),
        detail={
            "commissioner_code": org,
            "reason": reason,
            "state": state,
            "provider_code": _recorded_filter(provider_code),
            "invoice_id": invoice_id if invoice_id is None or is_uuid(invoice_id) else digest(invoice_id),
        },
    )
    return QueuePage(
        items=items,
        next_cursor=next_cursor,
        reasons_explained=explain_lines(item.reasons for item in items),
    )


# --- bulk decisions -----------------------------------------------------------------------------------


def decide_by_reason(
    session: Session, *, principal: Principal, invoice_id: str, body: BulkDecisionIn
) -> BulkDecisionOut:
    """Decides every undecided query line of the invoice that carries `body.reason_code`, all or
    none, in set-based statements (an invoice may have 100,000 query lines), and records one
    `invoice.lines.bulk_decision` event. No such line is not an error: 0 lines are decided."""
    invoice = _staff_invoice(session, principal, invoice_id)
    _hold_invoice(session, invoice)
    _ensure_deciding(invoice)
    lifecycle.ensure_no_identifier(body.reason, field="reason")
    assert invoice.seq is not None
    accept = body.decision == "accept"
    basis = body.amount_basis
    chosen = repository.select_undecided(session, seq=invoice.seq, reason_code=body.reason_code)
    if accept:
        missing = chosen.without_expected if basis == "expected" else chosen.without_claimed
        if missing:
            raise Unprocessable(
                f"{missing} of the {chosen.lines} undecided {body.reason_code} line(s) have no {basis} "
                f"amount, so nothing was decided; accept those lines one by one with an amount, or "
                f"accept these lines at the {'claimed' if basis == 'expected' else 'expected'} amount",
                code="amount-missing",
                extra={"lines": chosen.lines, "without_amount": missing},
            )
    total = (chosen.expected_pennies if basis == "expected" else chosen.claimed_pennies) if accept else 0
    if total > MAX_PENNIES:
        raise AmountTooLarge("the total of these lines")
    lines, closed = repository.decide_undecided(
        session,
        seq=invoice.seq,
        reason_code=body.reason_code,
        accept=accept,
        amount_basis=basis,
        reason=body.reason,
        decided_by=principal.sub[:200],
        now=datetime.now(UTC),
    )
    # The invoice is held: nothing decided any of these lines since they were counted.
    assert lines == chosen.lines, (lines, chosen.lines)
    record_invoice_event(
        session,
        action="update",
        type="invoice.lines.bulk_decision",
        principal=principal,
        entity_id=invoice.id,
        count=lines,
        detail={
            "reason_code": body.reason_code,
            "decision": body.decision,
            "amount_basis": basis,
            "amount_total": money(total),
            "to": QueryState.ACCEPTED if accept else QueryState.REJECTED,
            "challenges_closed": closed,
        },
    )
    session.flush()
    return BulkDecisionOut(
        invoice_id=invoice.id,
        reason_code=body.reason_code,
        decision=body.decision,
        amount=basis,
        lines=lines,
        amount_total=money(total) or "0.00",
    )
