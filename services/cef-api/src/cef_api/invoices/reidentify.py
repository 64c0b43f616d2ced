"""Re-identifying one invoice line's patient for the commissioner's staff working on that line.

Section 251 support covers re-identifying a patient only to resolve work on an invoice the
commissioner pays, so identities are given back one line at a time, to CEF staff of that line's
commissioner, with a purpose from a fixed list and a stated reason, up to a number per person per
day. Every refusal is an audit event; a missing invoice, a missing line and a line of someone else's
invoice are one and the same answer. The tokeniser is asked with this service's own token, naming
the person, the invoice and the line, and audits the call itself; this service's own
`patient.reidentify` event is committed before the identities leave it. Keyword-only arguments, no
HTTP types; the identities are never logged or stored here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from cef_api.invoices import repository
from cef_api.invoices.audit import SOURCE
from cef_api.invoices.exceptions import (
    LineNotFound,
    NoPatientToken,
    PatientTokensPurged,
    ReasonContainsIdentifier,
    ReidentificationLimitReached,
)
from cef_api.invoices.models import Invoice, InvoiceLine, Reidentification
from cef_api.locks import transaction_lock
from cef_api.tokeniser_client import Kind, OnBehalfOf
from cef_common.audit import AuditOutcome, build_event, record_event
from cef_common.auth import Principal
from cef_common.errors import AppError, ServiceUnavailable
from cef_common.redact import digest, identifiers_in_free_text, is_uuid

log = structlog.get_logger(__name__)

VALIDATE = "invoices:validate"
PURPOSES: Final = ("resolve-query", "provider-challenge", "audit-request")
EVENT_TYPE = "patient.reidentify"
ENTITY_TYPE = "invoice-line"
# The limit counts re-identifications in the last 24 hours (a rolling window, not a calendar day).
WINDOW = timedelta(hours=24)
# What a line keeps of its patient, and the kind of each token.
TOKEN_COLUMNS: Final[tuple[tuple[Kind, str], ...]] = (
    ("nhs_number", "nhs_token"),
    ("date_of_birth", "dob_token"),
    ("postcode", "postcode_token"),
)

_reidentification: sa.Table = Reidentification.__table__  # type: ignore[attr-defined]


class AuditUnavailable(ServiceUnavailable):
    code = "audit-unavailable"


class Detokenise(Protocol):
    """What `reidentify` needs of the tokeniser: cef_api.tokeniser_client.Detokeniser, or a fake."""

    def detokenise(
        self,
        kind: Kind,
        tokens: Sequence[str],
        *,
        purpose: str,
        on_behalf_of: OnBehalfOf,
        invoice_id: str,
        line_ref: str,
    ) -> list[str | None]: ...


@dataclass(frozen=True, slots=True)
class Reidentified:
    """One line's patient, as the tokeniser gave them back; never stored, never logged."""

    invoice_id: str
    line_ref: str
    purpose: str
    patient_token: str
    nhs_number: str | None
    date_of_birth: str | None
    postcode: str | None


@dataclass(frozen=True, slots=True)
class _Line:
    """What is read of the line before the tokeniser is asked (the session is closed by then)."""

    invoice_seq: int
    invoice_id: str
    commissioner_code: str
    line_ref: str
    tokens: dict[Kind, str | None]


def reidentify(
    *,
    engine: Engine,
    detokeniser: Detokenise,
    principal: Principal,
    invoice_id: str,
    line_ref: str,
    purpose: str,
    reason: str,
    daily_limit: int,
    now: datetime | None = None,
) -> Reidentified:
    """The NHS number, date of birth and postcode of one line's patient, for `principal` (CEF staff of
    the invoice's commissioner) and a purpose of PURPOSES, within the daily limit.

    Raises LineNotFound (404, audited) to anyone else and for a missing invoice or line,
    PatientTokensPurged (410) or NoPatientToken (409) when the line keeps no patient, a 422 for a
    reason holding an identifier, ReidentificationLimitReached (429) beyond the limit, and a 503
    when the tokeniser cannot answer or the event cannot be recorded."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
    now = now or datetime.now(UTC)
    line = _authorised_line(
        engine, principal=principal, invoice_id=invoice_id, line_ref=line_ref, purpose=purpose
    )
    found = identifiers_in_free_text(reason)
    if found:
        _record_refusal(engine, principal, purpose=purpose, line=line, reason=ReasonContainsIdentifier.code)
        raise ReasonContainsIdentifier(
            f"the reason seems to hold {' and '.join(found)}: it is audited and kept as text, so it must not "
            "identify anyone; say why you need the identities without them (e.g. the query and the line)",
            extra={"errors": [{"field": "reason", "message": f"must not contain {' or '.join(found)}"}]},
        )
    reservation = _reserve(engine, principal, line=line, purpose=purpose, daily_limit=daily_limit, now=now)
    person = OnBehalfOf(sub=principal.sub, issuer=principal.issuer, org=principal.org)
    try:
        values: dict[Kind, str | None] = {}
        for kind, token in line.tokens.items():
            values[kind] = (
                detokeniser.detokenise(
                    kind,
                    [token],
                    purpose=purpose,
                    on_behalf_of=person,
                    invoice_id=line.invoice_id,
                    line_ref=line.line_ref,
                )[0]
                if token is not None
                else None
            )
    except AppError as exc:
        _release(engine, principal, reservation, line=line, purpose=purpose, reason=exc.code)
        raise
    _confirm(engine, principal, line=line, purpose=purpose, reason=reason, values=values)
    log.info("patient_reidentified", invoice_seq=line.invoice_seq, purpose=purpose)
    return Reidentified(
        invoice_id=line.invoice_id,
        line_ref=line.line_ref,
        purpose=purpose,
        patient_token=line.tokens["nhs_number"] or "",
        nhs_number=values.get("nhs_number"),
        date_of_birth=values.get("date_of_birth"),
        postcode=values.get("postcode"),
    )


# --- the steps ------------------------------------------------------------------------------------------


def _authorised_line(
    engine: Engine, *, principal: Principal, invoice_id: str, line_ref: str, purpose: str
) -> _Line:
    """The line, when the caller is CEF staff of its invoice's commissioner and the line keeps its
    patient; every other case is refused, and audited, before anything else happens."""
    with Session(engine) as session:
        invoice = repository.by_id(session, invoice_id) if is_uuid(invoice_id) else None
        line = (
            repository.line_by_ref(session, invoice.seq, line_ref)
            if invoice is not None and invoice.seq is not None and len(line_ref) <= 100
            else None
        )
        org = (principal.org or "").upper()
        staff = principal.has(VALIDATE) and invoice is not None and org == invoice.commissioner_code
        why = (
            "no-invoice"
            if invoice is None
            else "not-commissioner-staff"
            if not staff
            else "no-line"
            if line is None
            else None
        )
        if why is not None:
            _denied(
                session,
                principal,
                purpose=purpose,
                reason=why,
                invoice=invoice,
                line=line,
                asked={"invoice_id": invoice_id, "line_ref": line_ref},
            )
            _commit(session)
            raise LineNotFound()
        assert invoice is not None
        assert line is not None
        assert invoice.seq is not None
        if line.nhs_token is None:
            purged = invoice.purged_at is not None
            reason = PatientTokensPurged.code if purged else NoPatientToken.code
            _denied(session, principal, purpose=purpose, reason=reason, invoice=invoice, line=line)
            _commit(session)
            if purged:
                raise PatientTokensPurged(
                    "the patient tokens of this invoice's lines were removed by retention on "
                    f"{invoice.purged_at:%Y-%m-%d}: its patients can no longer be re-identified "
                    "through the CEF"
                )
            raise NoPatientToken(
                f"line {line.line_ref} carries no valid NHS number (its outcome and reasons say why), so "
                "there is no patient to re-identify; ask the provider about the line instead"
            )
        return _Line(
            invoice_seq=invoice.seq,
            invoice_id=invoice.id,
            commissioner_code=invoice.commissioner_code,
            line_ref=line.line_ref or line_ref,
            tokens={kind: getattr(line, column) for kind, column in TOKEN_COLUMNS},
        )


def _reserve(
    engine: Engine, principal: Principal, *, line: _Line, purpose: str, daily_limit: int, now: datetime
) -> int:
    """Counts this re-identification against the person's limit, durably, before the tokeniser is
    asked: concurrent requests of one person (in any process) are serialised on a lock, so they can
    never exceed the limit together. Returns the row's id; raises the 429 (audited) beyond it."""
    with Session(engine) as session:
        transaction_lock(session, f"reidentify:{principal.issuer}:{principal.sub}")
        row = Reidentification(
            invoice_seq=line.invoice_seq,
            line_ref=line.line_ref,
            person_sub=principal.sub[:255],
            person_issuer=principal.issuer[:255],
            org=(principal.org or "").upper()[:12],
            purpose=purpose,
            at=now,
        )
        # The write comes first: on SQLite it takes the database's write lock, so the count below
        # sees every re-identification committed before it (PostgreSQL: the advisory lock above).
        session.add(row)
        _commit(session, flush_only=True)
        assert row.id is not None
        reservation = row.id
        earlier = _recent(session, principal, since=now - WINDOW, besides=reservation)
        if len(earlier) < daily_limit:
            _commit(session)
            return reservation
        session.rollback()
        # When enough of the earlier ones have left the window for one more to fit.
        frees_at = earlier[len(earlier) - daily_limit] + WINDOW if daily_limit > 0 else now + WINDOW
        retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
        _denied(
            session,
            principal,
            purpose=purpose,
            reason=ReidentificationLimitReached.code,
            line=line,
            extra={"limit": daily_limit, "retry_after_seconds": retry_after},
        )
        _commit(session)
    raise ReidentificationLimitReached(
        f"you have re-identified {len(earlier)} patient(s) in the last 24 hours, the most one person may "
        f"({daily_limit}); the next is possible in {retry_after} seconds",
        extra={"limit": daily_limit},
        headers={"Retry-After": str(retry_after)},
    )


def _recent(session: Session, principal: Principal, *, since: datetime, besides: int) -> list[datetime]:
    """When the person's other re-identifications since `since` were made, oldest first."""
    t = _reidentification.c
    stmt = (
        sa.select(t.at)
        .where(
            t.person_issuer == principal.issuer[:255],
            t.person_sub == principal.sub[:255],
            t.at > since,
            t.id != besides,
        )
        .order_by(t.at)
    )
    # SQLite gives the stored UTC times back without their zone.
    return [at if at.tzinfo else at.replace(tzinfo=UTC) for at in session.execute(stmt).scalars()]


def _release(
    engine: Engine, principal: Principal, reservation: int, *, line: _Line, purpose: str, reason: str
) -> None:
    """The tokeniser gave nothing: the attempt does not count, and its failure is on record."""
    try:
        with Session(engine) as session:
            session.execute(sa.delete(_reidentification).where(_reidentification.c.id == reservation))
            _event(
                session, principal, outcome="failure", purpose=purpose, line=line, detail={"reason": reason}
            )
            session.commit()
    except SQLAlchemyError as exc:
        log.error("reidentify_release_failed", error=type(exc).__name__)


def _confirm(
    engine: Engine,
    principal: Principal,
    *,
    line: _Line,
    purpose: str,
    reason: str,
    values: dict[Kind, str | None],
) -> None:
    """Commits the `patient.reidentify` event; the identities are returned only once it is durable."""
    with Session(engine) as session:
        _event(
            session,
            principal,
            outcome="success",
            purpose=purpose,
            line=line,
            detail={
                "reason": reason,
                "kinds": [kind for kind, value in values.items() if value is not None],
                "unresolved": [kind for kind, value in values.items() if value is None],
            },
        )
        _commit(session)


# --- audit ----------------------------------------------------------------------------------------------


def _commit(session: Session, *, flush_only: bool = False) -> None:
    """Commits (or only flushes) what the session holds; a database failure becomes a 503 that says
    nothing was re-identified."""
    try:
        if flush_only:
            session.flush()
        else:
            session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        log.error("reidentify_record_failed", error=type(exc).__name__)
        raise AuditUnavailable(
            "this re-identification could not be recorded, so nothing was re-identified: try again later"
        ) from None


def _event(
    session: Session,
    principal: Principal,
    *,
    outcome: AuditOutcome,
    purpose: str,
    line: _Line,
    detail: dict[str, Any],
) -> None:
    """A `patient.reidentify` event about a line the caller may work on (entity: that line; the
    person is the actor; the patient token in detail, for the auditor's listing by patient)."""
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="read",
            type=EVENT_TYPE,
            outcome=outcome,
            principal=principal,
            entity_type=ENTITY_TYPE,
            entity_id=f"{line.invoice_id}/{line.line_ref}",
            purpose=purpose,
            detail={
                "purpose": purpose,
                "invoice_id": line.invoice_id,
                "line_ref": line.line_ref,
                "commissioner_code": line.commissioner_code,
                "patient_token": line.tokens["nhs_number"],
                **detail,
            },
        ),
    )


def _denied(
    session: Session,
    principal: Principal,
    *,
    purpose: str,
    reason: str,
    invoice: Invoice | None = None,
    line: InvoiceLine | _Line | None = None,
    asked: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """A refused re-identification. What the caller asked for is recorded only where it is known (an
    invoice that exists, a line of it), else as a digest: a path segment may carry an identifier."""
    if isinstance(line, _Line):
        _event(
            session,
            principal,
            outcome="denied",
            purpose=purpose,
            line=line,
            detail={"reason": reason, **(extra or {})},
        )
        return
    asked = asked or {}
    invoice_id = invoice.id if invoice is not None else digest(asked.get("invoice_id", ""))
    line_ref: str | dict[str, Any] = (
        line.line_ref if line is not None and line.line_ref is not None else digest(asked.get("line_ref", ""))
    )
    known = invoice is not None and line is not None
    detail: dict[str, Any] = {
        "purpose": purpose,
        "reason": reason,
        "invoice_id": invoice_id,
        "line_ref": line_ref,
    }
    if known and line is not None:
        detail["patient_token"] = line.nhs_token
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="read",
            type=EVENT_TYPE,
            outcome="denied",
            principal=principal,
            entity_type=ENTITY_TYPE,
            entity_id=f"{invoice.id}/{line_ref}" if known and invoice is not None else None,
            purpose=purpose,
            detail={**detail, **(extra or {})},
        ),
    )


def _record_refusal(engine: Engine, principal: Principal, *, purpose: str, line: _Line, reason: str) -> None:
    with Session(engine) as session:
        _denied(session, principal, purpose=purpose, reason=reason, line=line)
        _commit(session)
