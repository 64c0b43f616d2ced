"""Invoice domain logic: submission, who may see what, query decisions and approval.
Keyword-only arguments, no HTTP types; errors are `AppError`s saying what to change."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cef_api.config import Settings
from cef_api.invoices import jobs, lifecycle, repository
from cef_api.invoices.audit import SOURCE, record_invoice_event
from cef_api.invoices.exceptions import (
    DuplicateInvoice,
    IdempotencyKeyReused,
    InvoiceHeaderInvalid,
    InvoiceNotReady,
    QueriesPending,
)
from cef_api.invoices.models import Invoice, InvoiceLine, InvoiceStatus, QueryState
from cef_api.invoices.schemas import (
    ApprovedItem,
    ApprovedPage,
    DecisionIn,
    InvoiceHeaderIn,
    InvoiceOut,
    InvoicePage,
    LineDetailOut,
    LineDetailPage,
    LineOut,
    LinePage,
    SummaryOut,
    line_money,
    money,
    pennies,
)
from cef_api.locks import transaction_lock
from cef_api.queue.base import ValidationQueue
from cef_api.reasons.catalogue import explain_lines
from cef_api.reference import repository as reference_repository
from cef_api.spool import EncryptedSpool
from cef_api.tokeniser_client import TokeniserClient, TokeniserUnavailable
from cef_api.validation.csvfile import BackingSurvey
from cef_common.audit import build_event, record_event
from cef_common.auth import Principal, ensure_org
from cef_common.errors import AppError, BadRequest, Forbidden, NotFound, NotVisible, validation_errors
from cef_common.params import MAX_INTEGER, decimal_cursor
from cef_common.redact import digest, known_or_digest

log = structlog.get_logger(__name__)

SUBMIT, VALIDATE, READ = "invoices:submit", "invoices:validate", "invoices:read"
OUTCOMES = ("valid", "query", "rejected")
MAX_PAGE = 5000


class Role(StrEnum):
    PROVIDER = "provider"
    STAFF = "staff"
    FINANCE = "finance"


# --- submission -------------------------------------------------------------------------------------


@dataclass
class SubmitResult:
    invoice: Invoice
    accepted: bool  # 202: still being validated in the background
    replayed: bool = False
    spool_handed_over: bool = False


def parse_header(raw: bytes) -> InvoiceHeaderIn:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvoiceHeaderInvalid(
            "the 'invoice' part is not JSON; send the header as a JSON object with invoice_number, "
            "provider_code, commissioner_code, invoice_date, period_start and period_end"
        ) from None
    if not isinstance(data, dict):
        raise InvoiceHeaderInvalid("the 'invoice' part must be a JSON object")
    try:
        return InvoiceHeaderIn.model_validate(data)
    except ValidationError as exc:
        errors = [
            {**e, "field": "invoice" if e["field"] == "body" else e["field"]}
            for e in validation_errors(exc.errors())
        ]
        first = errors[0]
        raise InvoiceHeaderInvalid(
            f"invoice header: {first['field']}: {first['message']}", extra={"errors": errors}
        ) from None


def _request_hash(header: InvoiceHeaderIn, spool: EncryptedSpool) -> str:
    canonical = orjson.dumps(header.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical + b"\n" + spool.sha256.encode()).hexdigest()


def _check_against_reference(session: Session, header: InvoiceHeaderIn) -> dict[str, int]:
    """The header's codes against the reference data in force; returns the versions in force."""
    versions = reference_repository.current_versions(session)
    if not reference_repository.provider_known(session, versions, header.provider_code):
        raise InvoiceHeaderInvalid(
            # Not quoted: an unknown code is free text, and may be an identifier put where a code belongs.
            "invoice header: the provider_code is not in the providers reference data; "
            "use the provider's ODS trust code (or ask the CEF to load it)",
            extra={"errors": [{"field": "provider_code", "message": "unknown provider"}]},
        )
    if not reference_repository.commissioner_known(session, versions, header.commissioner_code):
        raise InvoiceHeaderInvalid(
            "invoice header: the commissioner_code is not a commissioner the CEF "
            "knows (from GP practices, postcode districts or specialised services); address the invoice "
            "to a sub-ICB/CCG code or X24",
            extra={"errors": [{"field": "commissioner_code", "message": "unknown commissioner"}]},
        )
    return {dataset: v.version for dataset, v in versions.items()}


def _audit_refusal(engine: Engine, principal: Principal, exc: AppError, provider_code: str | None) -> None:
    """The submission's own event of a refused or failed submission (so the shared refusal auditor
    does not record it again). The header's provider_code is free text until it is known: it is
    recorded only when it is the caller's organisation or a provider of the reference data."""
    with Session(engine) as session:
        recorded_code = known_or_digest(
            provider_code,
            lambda code: (
                code == (principal.org or "").upper()
                or reference_repository.provider_known(
                    session, reference_repository.current_versions(session), code
                )
            ),
        )
        record_invoice_event(
            session,
            action="create",
            type="invoice.submit",
            outcome="denied" if exc.is_refusal else "failure",
            principal=principal,
            detail={"code": exc.code, "status": exc.status, "provider_code": recorded_code},
        )
        session.commit()
    exc.audited = True


def submit(
    *,
    engine: Engine,
    settings: Settings,
    tokeniser: TokeniserClient,
    worker: ValidationQueue | None,
    principal: Principal,
    header_bytes: bytes,
    spool: EncryptedSpool,
    idempotency_key: str | None,
) -> SubmitResult:
    """Checks, stores and validates a submission. The spool stays the caller's to delete unless
    the result says it was handed over to the background worker."""
    provider_code: str | None = None
    try:
        header = parse_header(header_bytes)
        provider_code = header.provider_code
        ensure_org(principal, header.provider_code, what="an invoice of the provider_code it names")
        request_hash = _request_hash(header, spool)
        with Session(engine, expire_on_commit=False) as session:
            if idempotency_key:
                replay = _replay(session, header.provider_code, idempotency_key, request_hash)
                if replay is not None:
                    return replay
            versions = _check_against_reference(session, header)
            if repository.number_taken(session, header.provider_code, header.invoice_number):
                # A concurrent request with this key may have stored the invoice since the look-up
                # above: then this is its retry, not a duplicate.
                replay = (
                    _replay(session, header.provider_code, idempotency_key, request_hash)
                    if idempotency_key
                    else None
                )
                if replay is not None:
                    return replay
                raise DuplicateInvoice(
                    f"invoice {header.invoice_number} of provider {header.provider_code} "
                    "was submitted before; "
                    "give a corrected invoice a new invoice_number"
                )
        if worker is not None and worker.pool is not None and spool.size > settings.async_threshold_bytes:
            worker.pool.warm(versions)  # its processes start while the structural pass runs
        survey = jobs.survey_lines(spool, settings.validation_batch_lines)
        invoice = _store(engine, principal, header, request_hash, spool, idempotency_key, settings)
    except AppError as exc:
        _audit_refusal(engine, principal, exc, provider_code)
        raise
    if isinstance(invoice, SubmitResult):
        return invoice
    assert invoice.seq is not None
    try:
        return _validate_or_hand_over(engine, settings, tokeniser, worker, invoice, spool, survey)
    except TokeniserUnavailable as exc:
        # The tokeniser failed while the request validated the invoice: the submission is refused
        # whole, so nothing of it is kept and its number and key are free for the retry.
        jobs.discard_invoice(engine, invoice.seq, exc.detail)
        raise TokeniserUnavailable(
            f"the tokeniser is unavailable ({exc.detail}); nothing of this invoice was stored: "
            "submit it again shortly (with the same Idempotency-Key if you like)"
        ) from None
    except Exception as exc:
        # Whatever stopped it (e.g. the database went away), the invoice must not stay open: an open
        # invoice holds up every later invoice of its chain.
        reason = getattr(exc, "detail", None) or f"the submission failed unexpectedly ({type(exc).__name__})"
        jobs.fail_invoice_or_retry(
            engine, invoice.seq, f"{reason}; nothing of this invoice was kept: submit it again"
        )
        raise


def _replay(session: Session, provider_code: str, key: str, request_hash: str) -> SubmitResult | None:
    """The submission a key was used for, answered again; None when the key is new (or its invoice
    failed: a failed invoice frees its key, so the retry is a new submission)."""
    existing = repository.by_idempotency_key(session, provider_code, key)
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different submission; use a new key for a new submission"
        )
    # Still being validated (by the first request or in the background): 202, as for the original.
    accepted = existing.background or existing.status in InvoiceStatus.OPEN
    return SubmitResult(existing, accepted=accepted, replayed=True)


def _store(
    engine: Engine,
    principal: Principal,
    header: InvoiceHeaderIn,
    request_hash: str,
    spool: EncryptedSpool,
    idempotency_key: str | None,
    settings: Settings,
) -> Invoice | SubmitResult:
    background = spool.size > settings.async_threshold_bytes
    invoice = Invoice(
        id=str(uuid.uuid4()),
        invoice_number=header.invoice_number,
        provider_code=header.provider_code,
        commissioner_code=header.commissioner_code,
        invoice_date=header.invoice_date,
        period_start=header.period_start,
        period_end=header.period_end,
        status=InvoiceStatus.RECEIVED,
        submitted_at=datetime.now(UTC),
        submitted_by=principal.sub[:200],
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        backing_bytes=spool.size,
        background=background,
    )
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.add(invoice)
            session.flush()
            record_invoice_event(
                session,
                action="create",
                type="invoice.submit",
                outcome="success",
                principal=principal,
                entity_id=invoice.id,
                detail={
                    # Provider-chosen free text that could hold an identifier: see docs/cef-api.md.
                    "invoice_number": digest(header.invoice_number),
                    "provider_code": header.provider_code,
                    "commissioner_code": header.commissioner_code,
                    "backing_bytes": spool.size,
                },
            )
            session.commit()
    except IntegrityError:
        # A concurrent request won the race: the same key replays it, the same number is a conflict.
        with Session(engine, expire_on_commit=False) as session:
            if idempotency_key:
                replay = _replay(session, header.provider_code, idempotency_key, request_hash)
                if replay is not None:
                    return replay
        raise DuplicateInvoice(
            f"invoice {header.invoice_number} of provider {header.provider_code} was submitted before; "
            "give a corrected invoice a new invoice_number"
        ) from None
    return invoice


def _validate_or_hand_over(
    engine: Engine,
    settings: Settings,
    tokeniser: TokeniserClient,
    worker: ValidationQueue | None,
    invoice: Invoice,
    spool: EncryptedSpool,
    survey: BackingSurvey,
) -> SubmitResult:
    assert invoice.seq is not None
    if not invoice.background:
        # The guard tells other nodes this request is alive while it validates its own invoice.
        with jobs.request_guard(engine, invoice.seq):
            deadline = time.monotonic() + settings.sync_wait_seconds
            while True:
                attempt = jobs.claim(engine, invoice)
                if attempt is not None:
                    try:
                        jobs.validate_invoice(
                            engine,
                            seq=invoice.seq,
                            spool=spool,
                            survey=survey,
                            tokeniser=tokeniser,
                            settings=settings,
                            attempt=attempt,
                        )
                    except jobs.AttemptSuperseded:
                        # Another node failed it meanwhile (this request looked abandoned): nothing
                        # more was written; the answer is the invoice as it now is.
                        pass
                    with Session(engine, expire_on_commit=False) as session:
                        done = repository.by_seq(session, invoice.seq)
                    assert done is not None
                    return SubmitResult(done, accepted=False)
                if time.monotonic() >= deadline or worker is None:
                    break
                time.sleep(0.05)
            with Session(engine) as session:
                repository.update_invoice(session, invoice.seq, background=True)
                session.commit()
            invoice.background = True
    if worker is None:
        jobs.fail_invoice(engine, invoice.seq, "background validation is switched off on this service")
        raise InvoiceNotReady("this service validates no invoice in the background; submit a smaller file")
    handed_over = worker.enqueue(invoice, spool, survey)
    return SubmitResult(invoice, accepted=True, spool_handed_over=handed_over)


# --- views ---------------------------------------------------------------------------------------------


# Said alike of an invoice that does not exist and of one the caller may not see, so that the
# answer never tells a caller that someone else's invoice exists (docs/cef-api.md, "Refusals").
NO_SUCH_INVOICE = (
    "there is no invoice with this id among those the caller may see (providers see their own "
    "invoices, commissioners those addressed to them); use the id returned on submission"
)


def role_for(principal: Principal, invoice: Invoice) -> Role:
    org = (principal.org or "").upper()
    if principal.has(VALIDATE) and org == invoice.commissioner_code:
        return Role.STAFF
    if principal.has(SUBMIT) and org == invoice.provider_code:
        return Role.PROVIDER
    if principal.has(READ) and org == invoice.commissioner_code:
        return Role.FINANCE
    raise NotVisible(NO_SUCH_INVOICE)


def invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.id,
        invoice_number=invoice.invoice_number,
        provider_code=invoice.provider_code,
        commissioner_code=invoice.commissioner_code,
        invoice_date=invoice.invoice_date,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        status=invoice.status,
        summary=SummaryOut(
            lines=invoice.lines,
            valid=invoice.valid,
            query=invoice.query,
            rejected=invoice.rejected,
            claimed_amount=money(invoice.claimed_pennies) or "0.00",
            validated_amount=money(invoice.validated_pennies) or "0.00",
        ),
        lines_done=invoice.lines_done,
        approved_amount=money(invoice.approved_pennies),
        paid_amount=money(invoice.paid_pennies or 0) or "0.00",
        ledger_reference=invoice.ledger_reference,
        reference_versions=json.loads(invoice.reference_versions or "{}"),
        failure_reason=invoice.failure_reason,
        withdraw_reason=invoice.withdraw_reason,
        submitted_at=invoice.submitted_at,
        validated_at=invoice.validated_at,
        decided_at=invoice.decided_at,
        withdrawn_at=invoice.withdrawn_at,
    )


def get_invoice(session: Session, *, principal: Principal, invoice_id: str) -> tuple[Invoice, Role]:
    invoice = repository.by_id(session, invoice_id)
    if invoice is None:
        raise NotFound(NO_SUCH_INVOICE)
    return invoice, role_for(principal, invoice)


def _cursor(raw: str | None) -> int | None:
    # Every cursor is an INTEGER column's value (invoice.seq, invoice_line.line_no).
    return decimal_cursor(raw, name="cursor", maximum=MAX_INTEGER)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}", code="bad-limit")
    return limit


def list_invoices(
    session: Session,
    *,
    principal: Principal,
    status: str | None,
    provider_code: str | None,
    commissioner_code: str | None,
    limit: int,
    cursor: str | None,
) -> InvoicePage:
    org = (principal.org or "").upper()
    if not org:
        raise Forbidden("the token names no organisation (org claim)", code="no-organisation")
    provider_code = provider_code.upper() if provider_code else None
    commissioner_code = commissioner_code.upper() if commissioner_code else None
    if principal.has(VALIDATE) or principal.has(READ):
        if commissioner_code and commissioner_code != org and not principal.has(SUBMIT):
            raise Forbidden(
                "commissioner_code may name only the caller's own organisation (or be left out)",
                code="other-organisation",
            )
    if principal.has(SUBMIT) and not (principal.has(VALIDATE) or principal.has(READ)):
        if provider_code and provider_code != org:
            raise Forbidden(
                "provider_code may name only the caller's own organisation (or be left out)",
                code="other-organisation",
            )
        provider_code = org
    elif not principal.has(SUBMIT):
        commissioner_code = org
    statuses = [s.strip() for s in status.split(",")] if status else None
    limit = _limit(limit)
    rows = repository.page_invoices(
        session,
        provider_code=provider_code,
        commissioner_code=commissioner_code,
        statuses=statuses,
        after_seq=_cursor(cursor),
        limit=limit + 1,
    )
    # A token holding several scopes sees the union its roles allow, never more.
    visible = [i for i in rows if _may_see(principal, i)]
    page = visible[:limit]
    more = len(rows) > limit
    next_cursor = str(rows[limit - 1].seq) if more else None
    return InvoicePage(items=[invoice_out(i) for i in page], next_cursor=next_cursor)


def _may_see(principal: Principal, invoice: Invoice) -> bool:
    try:
        role_for(principal, invoice)
        return True
    except NotVisible:
        return False


def line_reasons(line: InvoiceLine) -> list[str]:
    """The line's reason codes, whole and in their stored (sorted) order."""
    return line.reasons.split(";") if line.reasons else []


def query_state(line: lifecycle.QueryLine) -> str | None:
    """A query line's state; None for a line of another outcome, which has none."""
    return lifecycle.line_state(line) if line.outcome == "query" else None


def _line_out(line: InvoiceLine) -> LineOut:
    return LineOut(
        line_ref=line.line_ref,
        outcome=line.outcome,
        reasons=line_reasons(line),
        responsible_commissioner=line.responsible_commissioner,
        expected_amount=line_money(line.expected_pennies),
    )


def _line_detail(line: InvoiceLine) -> LineDetailOut:
    return LineDetailOut(
        **_line_out(line).model_dump(),
        line_no=line.line_no,
        patient_token=line.nhs_token,
        activity_date=line.activity_date,
        hrg_code=line.hrg_code,
        point_of_delivery=line.point_of_delivery,
        service_code=line.service_code,
        claimed_amount=line_money(line.claimed_pennies),
        state=query_state(line),
        decision=line.decision,
        decided_amount=line_money(line.decided_pennies),
        decision_reason=line.decision_reason,
        decided_by=line.decided_by,
        decided_at=line.decided_at,
    )


def line_reader(session: Session, *, principal: Principal, invoice_id: str) -> tuple[Invoice, Role]:
    """The invoice whose lines the caller asks for, and as whom: its provider or its CEF staff;
    finance is refused (403), anyone else answered as if the invoice did not exist (404)."""
    invoice, role = get_invoice(session, principal=principal, invoice_id=invoice_id)
    if role is Role.FINANCE:
        raise Forbidden(
            "finance sees invoice headers, summaries and approved amounts, never line-level data",
            code="lines-not-for-finance",
        )
    return invoice, role


def check_outcome(outcome: str | None) -> None:
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}", code="bad-outcome")


def list_lines(
    session: Session,
    *,
    principal: Principal,
    invoice_id: str,
    outcome: str | None,
    limit: int,
    cursor: str | None,
) -> LinePage | LineDetailPage:
    invoice, role = line_reader(session, principal=principal, invoice_id=invoice_id)
    check_outcome(outcome)
    limit = _limit(limit)
    assert invoice.seq is not None
    rows = repository.page_lines(
        session, seq=invoice.seq, outcome=outcome, after_line_no=_cursor(cursor), limit=limit + 1
    )
    page = rows[:limit]
    next_cursor = str(page[-1].line_no) if len(rows) > limit else None
    explained = explain_lines(line_reasons(r) for r in page)
    if role is Role.PROVIDER:
        return LinePage(
            items=[_line_out(r) for r in page], next_cursor=next_cursor, reasons_explained=explained
        )
    record_invoice_event(
        session,
        action="read",
        type="invoice.lines.read",
        outcome="success",
        principal=principal,
        entity_id=invoice.id,
        count=len(page),
        detail={"outcome": outcome, "with": "patient_token"},
    )
    return LineDetailPage(
        items=[_line_detail(r) for r in page], next_cursor=next_cursor, reasons_explained=explained
    )


# --- workflow -------------------------------------------------------------------------------------------


def _staff_invoice(session: Session, principal: Principal, invoice_id: str) -> Invoice:
    invoice, role = get_invoice(session, principal=principal, invoice_id=invoice_id)
    if role is not Role.STAFF:
        raise Forbidden(
            "deciding needs the scope invoices:validate for the invoice's commissioner",
            code="insufficient-scope",
        )
    return invoice


def decide_line(
    session: Session, *, principal: Principal, invoice_id: str, line_ref: str, decision: DecisionIn
) -> LineDetailOut:
    invoice = _staff_invoice(session, principal, invoice_id)
    _ensure_deciding(invoice)
    assert invoice.seq is not None
    line = repository.line_by_ref(session, invoice.seq, line_ref)
    if line is None:
        # The line_ref is the caller's text until a line answers to it.
        raise NotFound(
            f"invoice {invoice.invoice_number} has no line with that line_ref; "
            "use a line_ref of its line detail"
        )
    target = QueryState.ACCEPTED if decision.decision == "accept" else QueryState.REJECTED
    lifecycle.ensure_line_step(line, target, line_ref=line_ref)
    lifecycle.ensure_no_identifier(decision.reason, field="reason")
    amount = pennies(Decimal(decision.amount)) if decision.amount is not None else None
    decide_lines(
        session,
        principal=principal,
        lines=[line],
        accept=decision.decision == "accept",
        amounts=[amount],
        reason=decision.reason,
    )
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="update",
            type="invoice.line.decision",
            outcome="success",
            principal=principal,
            entity_type="invoice-line",
            entity_id=f"{invoice.id}/{line_ref}",
            detail={
                "decision": line.decision,
                "amount": money(line.decided_pennies),
                "to": line.query_state,
            },
        ),
    )
    session.flush()
    return _line_detail(line)


def _ensure_deciding(invoice: Invoice) -> None:
    """Query lines are challenged and decided only while the invoice is validated, not yet approved."""
    if invoice.status != InvoiceStatus.VALIDATED:
        raise InvoiceNotReady(
            f"the invoice is {invoice.status}; "
            "its lines can be challenged or decided only while it is validated and not yet approved",
            extra={"state": invoice.status},
            refusal=True,
        )


def decide_lines(
    session: Session,
    *,
    principal: Principal,
    lines: list[InvoiceLine],
    accept: bool,
    amounts: list[int | None],
    reason: str | None,
) -> None:
    """Sets the decision of query lines already checked to be undecided, and closes their open
    challenges; the caller records the audit event (one per line, or one for a bulk decision)."""
    now = datetime.now(UTC)
    for line, amount in zip(lines, amounts, strict=True):
        line.decision = "accept" if accept else "reject"
        line.decided_pennies = amount if accept else None
        line.decision_reason = reason
        line.decided_by = principal.sub[:200]
        line.decided_at = now
        line.query_state = QueryState.ACCEPTED if accept else QueryState.REJECTED
        session.add(line)
    repository.close_challenges(session, [line.id for line in lines if line.id is not None], now)


def approve(session: Session, *, principal: Principal, invoice_id: str) -> InvoiceOut:
    invoice = _staff_invoice(session, principal, invoice_id)
    lifecycle.ensure_invoice_step(invoice, InvoiceStatus.APPROVED)
    assert invoice.seq is not None
    pending = repository.pending_queries(session, invoice.seq)
    if pending:
        raise QueriesPending(
            f"{pending} query line(s) have no decision yet; accept or reject each before approving "
            "(cef queries list shows them)",
            extra={"pending": pending},
            refusal=True,
        )
    total, paid, unpaid = repository.payable_totals(session, invoice.seq)
    target = (
        InvoiceStatus.APPROVED
        if unpaid == 0
        else InvoiceStatus.REJECTED
        if paid == 0
        else InvoiceStatus.PART_APPROVED
    )
    invoice.approved_pennies = total
    invoice.decided_at = datetime.now(UTC)
    invoice.decided_by = principal.sub[:200]
    invoice.ledger_reference = ledger_reference(invoice)
    lifecycle.move_invoice(
        session,
        invoice,
        target,
        principal=principal,
        type="invoice.approve",
        detail={
            "approved_amount": money(total),
            "lines_paid": paid,
            "lines_unpaid": unpaid,
            "ledger_reference": invoice.ledger_reference,
        },
    )
    session.flush()
    return invoice_out(invoice)


def ledger_reference(invoice: Invoice) -> str:
    """Unique, stable and free of anything the provider typed: the commissioner and the CEF's
    own order of submission."""
    return f"CEF-{invoice.commissioner_code}-{invoice.seq:08d}"


def withdraw(session: Session, *, principal: Principal, invoice_id: str, reason: str | None) -> InvoiceOut:
    """The provider takes a validated invoice back before approval: its lines stop counting as
    earlier lines for later duplicates, its open challenges close, and it can be neither decided
    nor paid. The invoice number stays used: a corrected invoice gets a new one."""
    invoice, role = get_invoice(session, principal=principal, invoice_id=invoice_id)
    if role is not Role.PROVIDER:
        raise Forbidden(
            "only the provider that submitted the invoice (invoices:submit) can withdraw it",
            code="insufficient-scope",
        )
    lifecycle.ensure_no_identifier(reason, field="reason")
    assert invoice.seq is not None
    # The chain's lock: a validation of a later invoice to this commissioner either read these
    # lines' duplicate keys and spells before the withdrawal or finds them gone.
    transaction_lock(session, repository.chain_lock_name(invoice.commissioner_code))
    repository.update_invoice(session, invoice.seq, withdrawn_by=principal.sub[:200])  # the first write
    session.refresh(invoice)
    now = datetime.now(UTC)
    invoice.withdrawn_at, invoice.withdrawn_by, invoice.withdraw_reason = now, principal.sub[:200], reason
    lifecycle.move_invoice(
        session, invoice, InvoiceStatus.WITHDRAWN, principal=principal, type="invoice.withdraw"
    )
    lines = repository.stop_counting_lines(session, invoice.seq)
    closed = repository.close_invoice_challenges(session, invoice.seq, now)
    session.flush()
    log.info("invoice_withdrawn", invoice_seq=invoice.seq, lines=lines, challenges_closed=closed)
    return invoice_out(invoice)


def approved_to_pay(
    session: Session, *, principal: Principal, limit: int, cursor: str | None
) -> ApprovedPage:
    org = (principal.org or "").upper()
    if not org:
        raise Forbidden("the token names no organisation (org claim)", code="no-organisation")
    limit = _limit(limit)
    rows = repository.page_invoices(
        session,
        provider_code=None,
        commissioner_code=org,
        statuses=list(InvoiceStatus.PAYABLE),
        after_seq=_cursor(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    approved, paid = repository.payable_total(session, org)
    return ApprovedPage(
        items=[approved_item(i) for i in page],
        total_approved_amount=money(approved) or "0.00",
        total_unpaid_amount=money(approved - paid) or "0.00",
        next_cursor=str(page[-1].seq) if len(rows) > limit else None,
    )


def approved_item(invoice: Invoice) -> ApprovedItem:
    approved = invoice.approved_pennies or 0
    return ApprovedItem(
        id=invoice.id,
        invoice_number=invoice.invoice_number,
        provider_code=invoice.provider_code,
        commissioner_code=invoice.commissioner_code,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        status=invoice.status,
        approved_amount=money(approved) or "0.00",
        paid_amount=money(invoice.paid_pennies or 0) or "0.00",
        unpaid_amount=money(approved - (invoice.paid_pennies or 0)) or "0.00",
        claimed_amount=money(invoice.claimed_pennies) or "0.00",
        ledger_reference=invoice.ledger_reference,
        decided_at=invoice.decided_at,
    )


# --- retention ------------------------------------------------------------------------------------------


def purge(
    engine: Engine, *, older_than_days: int, principal: Principal | None, now: datetime | None = None
) -> dict[str, Any]:
    """Removes line-level patient tokens (and duplicate keys made from them) of closed invoices
    decided more than `older_than_days` ago; outcomes, reasons, amounts and summaries stay."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    with Session(engine) as session:
        seqs = repository.closed_before(session, cutoff)
        lines = repository.purge_line_tokens(session, seqs)
        stamp = datetime.now(UTC)
        for seq in seqs:
            repository.update_invoice(session, seq, purged_at=stamp)
        record_invoice_event(
            session,
            action="delete",
            type="invoice.purge",
            outcome="success",
            principal=principal,
            count=len(seqs),
            detail={"older_than_days": older_than_days, "lines": lines, "cutoff": cutoff.isoformat()},
        )
        session.commit()
    log.info("retention_purge", invoices=len(seqs), lines=lines)
    return {"invoices": len(seqs), "lines": lines}
