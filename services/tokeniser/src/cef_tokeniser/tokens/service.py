"""Tokenising, re-tokenising and re-identifying batches; no HTTP types here.

Each operation commits its own transaction before returning, rather than leaving it to the
request's session: the originals of issued tokens, and the audit event of a re-identification,
must be durable before the caller sees a single token or value."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from cef_common.audit import AuditEventIn, AuditOutcome, build_event, record_event
from cef_common.auth import Principal
from cef_common.redact import Redacted, digest
from cef_tokeniser import repository
from cef_tokeniser.config import CONTEXT_PATTERN
from cef_tokeniser.crypto import DataKey, KeyUnavailable, parse_token
from cef_tokeniser.keys import KeyRing
from cef_tokeniser.tokens.exceptions import AuditUnavailable, StoreUnavailable, UnknownKeyVersion
from cef_tokeniser.tokens.kinds import MISSING, NOT_A_STRING, standardise_batch

log = structlog.get_logger(__name__)

SOURCE = "tokeniser"
TOKEN_INVALID = "token_invalid"
TOKEN_UNKNOWN = "token_unknown"
TOKEN_UNREADABLE = "token_unreadable"


class StoredTokenCache:
    """Tokens whose original is known to be stored, per context, so repeat batches skip the database.

    Holds tokens only, never values. Bounded: when full it starts again (a miss only costs a query)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._sets: dict[str, set[str]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def missing(self, context: str, tokens: Sequence[str]) -> list[int]:
        known = self._sets.get(context)
        if not known:
            return list(range(len(tokens)))
        return [i for i, t in enumerate(tokens) if t not in known]

    def add(self, context: str, tokens: Sequence[str]) -> None:
        if not tokens or self.max_size <= 0:
            return
        with self._lock:
            if self._size + len(tokens) > self.max_size:
                self._sets.clear()
                self._size = 0
            known = self._sets.setdefault(context, set())
            before = len(known)
            known.update(tokens[: self.max_size])
            self._size += len(known) - before

    def clear(self) -> None:
        with self._lock:
            self._sets.clear()
            self._size = 0


@dataclass
class TokeniseResult:
    kind: str
    context: str
    key_version: int
    tokens: list[str | None]
    errors: list[tuple[int, str]]
    outward_codes: list[str | None] | None = None
    new_originals: int = 0


@dataclass
class RetokeniseResult:
    kind: str
    context: str
    key_version: int
    tokens: list[str | None]
    errors: list[tuple[int, str]]


@dataclass
class DetokeniseResult:
    values: list[str | None]
    errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class TokenService:
    """The tokeniser's operations over one database and key ring."""

    engine: Engine
    keyring: KeyRing
    cache: StoredTokenCache
    on_audit: Callable[[], None] = lambda: None

    # --- shared steps -------------------------------------------------------------------------

    def _store_and_audit(self, key: DataKey, pairs: Sequence[tuple[str, str]], event: AuditEventIn) -> int:
        """Stores the sealed originals of (token, value) pairs not stored yet, with the audit event,
        in one transaction; returns how many originals were new."""
        context = key.context
        tokens = [t for t, _ in pairs]
        # In token order: the look-up and the insert then walk the token index from one end to the
        # other instead of jumping about it (a first load of a million patients is all new tokens).
        maybe_new = sorted(self.cache.missing(context, tokens), key=tokens.__getitem__)
        added = 0
        try:
            with Session(self.engine) as session:
                conn = session.connection()
                if maybe_new:
                    existing = repository.stored_tokens(conn, context, [tokens[i] for i in maybe_new])
                    new_pairs = [pairs[i] for i in maybe_new if tokens[i] not in existing]
                    kind, version = key.kind, key.version
                    rows = [
                        (context, token, kind, version, sealed)
                        for (token, _), sealed in zip(new_pairs, key.seal_many(new_pairs), strict=True)
                    ]
                    added = repository.add_originals(conn, rows)
                record_event(session, event)
                session.commit()
        except SQLAlchemyError as exc:
            log.error("token_store_failed", error=type(exc).__name__)
            raise StoreUnavailable(
                "the tokeniser could not store this batch; nothing was issued: retry later"
            ) from None
        self.cache.add(context, [tokens[i] for i in maybe_new])
        return added

    def record(self, event: AuditEventIn) -> None:
        """Commits one audit event on its own (raises AuditUnavailable when it cannot)."""
        try:
            with Session(self.engine) as session:
                record_event(session, event)
                session.commit()
        except SQLAlchemyError as exc:
            log.error("audit_record_failed", error=type(exc).__name__)
            raise AuditUnavailable(
                "the audit event of this call could not be recorded, so it was refused: retry later"
            ) from None
        self.on_audit()

    def _key(self, kind: str, context: str, version: int | None, principal: Principal) -> DataKey:
        """The key of `version`, or the current one (created at first use) when version is None."""
        try:
            if version is None:
                return self.keyring.current(kind, context, actor=principal)
            found = self.keyring.get(kind, context, version)
            if found is None:
                current = self.keyring.current_version(kind, context)
                raise UnknownKeyVersion(
                    # The version is not quoted: it is the caller's number (it may be an NHS number).
                    f"that key_version does not exist for {kind} in context {context!r}"
                    + (f"; the current version is {current}" if current else "; omit key_version")
                )
            return found
        except (SQLAlchemyError, KeyUnavailable) as exc:
            log.error("key_unavailable", kind=kind, context=context, error=type(exc).__name__)
            raise StoreUnavailable("the tokeniser could not read its keys: retry later") from None

    # --- operations ---------------------------------------------------------------------------

    def tokenise(
        self,
        *,
        kind: str,
        context: str,
        values: list[Any],
        key_version: int | None,
        principal: Principal,
    ) -> TokeniseResult:
        standardised = standardise_batch(kind, values)
        key = self._key(kind, context, key_version, principal)
        distinct = [v for v in dict.fromkeys(standardised.values) if v is not None]
        distinct_tokens = key.tokens(distinct)
        by_value = dict(zip(distinct, distinct_tokens, strict=True))
        tokens = [None if v is None else by_value[v] for v in standardised.values]
        event = build_event(
            source=SOURCE,
            action="execute",
            type="patient.tokenise",
            outcome="success",
            principal=principal,
            entity_type="patient_token",
            count=len(values),
            detail={
                "kind": kind,
                "context": context,
                "key_version": key.version,
                "invalid": len(standardised.errors),
                "distinct": len(distinct),
            },
        )
        new = self._store_and_audit(key, list(zip(distinct_tokens, distinct, strict=True)), event)
        return TokeniseResult(
            kind=kind,
            context=context,
            key_version=key.version,
            tokens=tokens,
            errors=standardised.errors,
            outward_codes=standardised.outward_codes,
            new_originals=new,
        )

    def _open(
        self, *, kind: str, context: str, tokens: list[Any]
    ) -> tuple[list[str | None], list[tuple[int, str]], list[int | None]]:
        """The originals of `tokens` issued in `context` (None with an error where not), and each
        token's key version."""
        errors: list[tuple[int, str]] = []
        versions: list[int | None] = []
        wanted: list[str] = []
        for i, t in enumerate(tokens):
            parsed = parse_token(t)
            if parsed is None or parsed[0] != kind:
                errors.append(
                    (i, MISSING if t is None else TOKEN_INVALID if type(t) is str else NOT_A_STRING)
                )
                versions.append(None)
            else:
                wanted.append(t)
                versions.append(parsed[1])
        with self.engine.connect() as conn:
            sealed = repository.sealed_originals(conn, context, list(dict.fromkeys(wanted)))
        values: list[str | None] = []
        for i, t in enumerate(tokens):
            version = versions[i]
            if version is None:
                values.append(None)
                continue
            blob = sealed.get(t)
            key = self.keyring.get(kind, context, version) if blob is not None else None
            if blob is None or key is None:
                errors.append((i, TOKEN_UNKNOWN))
                values.append(None)
                continue
            try:
                values.append(key.open(blob, t))
            except KeyUnavailable:
                log.warning("original_unreadable", kind=kind, context=context, key_version=version)
                errors.append((i, TOKEN_UNREADABLE))
                values.append(None)
        errors.sort()
        return values, errors, versions

    def detokenise(
        self,
        *,
        kind: str,
        context: str,
        tokens: list[Any],
        purpose: str,
        principal: Principal,
        work: dict[str, Any] | None = None,
    ) -> DetokeniseResult:
        """The originals of `tokens`; `work` (whom the peer acts for, the invoice and the line) goes
        into the audit event, which is committed before anything is returned."""
        work = work or {}
        try:
            values, errors, _ = self._open(kind=kind, context=context, tokens=tokens)
        except (SQLAlchemyError, KeyUnavailable) as exc:
            log.error("detokenise_failed", error=type(exc).__name__)
            self.record(
                detokenise_event(
                    principal,
                    kind=kind,
                    context=context,
                    purpose=purpose,
                    count=len(tokens),
                    outcome="failure",
                    detail={"reason": "store_unavailable", **work},
                )
            )
            raise StoreUnavailable("the tokeniser could not read its store: retry later") from None
        # The event is committed before any value leaves: if it cannot be, nothing is returned.
        self.record(
            detokenise_event(
                principal,
                kind=kind,
                context=context,
                purpose=purpose,
                count=len(tokens),
                outcome="success",
                detail={"resolved": len(tokens) - len(errors), "unresolved": len(errors), **work},
            )
        )
        return DetokeniseResult(values=values, errors=errors)

    def retokenise(
        self, *, kind: str, context: str, tokens: list[Any], principal: Principal
    ) -> RetokeniseResult:
        key = self._key(kind, context, None, principal)
        try:
            values, errors, versions = self._open(kind=kind, context=context, tokens=tokens)
        except (SQLAlchemyError, KeyUnavailable) as exc:
            log.error("retokenise_failed", error=type(exc).__name__)
            raise StoreUnavailable("the tokeniser could not read its store: retry later") from None
        stale = [v for v, ver in zip(values, versions, strict=True) if v is not None and ver != key.version]
        distinct = list(dict.fromkeys(stale))
        by_value = dict(zip(distinct, key.tokens(distinct), strict=True))
        new_tokens: list[str | None] = []
        for t, v, ver in zip(tokens, values, versions, strict=True):
            if v is None:
                new_tokens.append(None)
            elif ver == key.version:
                new_tokens.append(t)
            else:
                new_tokens.append(by_value[v])
        event = build_event(
            source=SOURCE,
            action="execute",
            type="patient.retokenise",
            outcome="success",
            principal=principal,
            entity_type="patient_token",
            count=len(tokens),
            detail={
                "kind": kind,
                "context": context,
                "key_version": key.version,
                "rekeyed": len(stale),
                "unresolved": len(errors),
            },
        )
        self._store_and_audit(key, [(by_value[v], v) for v in distinct], event)
        return RetokeniseResult(
            kind=kind, context=context, key_version=key.version, tokens=new_tokens, errors=errors
        )


def detokenise_event(
    principal: Principal,
    *,
    kind: str | None,
    context: str | Redacted | None,
    purpose: str | None,
    count: int,
    outcome: AuditOutcome,
    detail: dict[str, Any] | None = None,
) -> AuditEventIn:
    return build_event(
        source=SOURCE,
        action="execute",
        type="patient.detokenise",
        outcome=outcome,
        principal=principal,
        entity_type="patient_token",
        count=count,
        purpose=(purpose or None) and purpose[:1000],
        detail={"kind": kind, "context": context, **(detail or {})},
    )


def refusal_event(
    type_: str,
    principal: Principal,
    *,
    kind: str | None,
    context: str | Redacted | None,
    purpose: str | None,
    count: int,
    reason: str,
    work: dict[str, Any] | None = None,
) -> AuditEventIn:
    """The audit event of a refused call (`reason` is the problem code the caller received; `work`,
    for a re-identification, what of its on_behalf_of, invoice and line may be recorded).
    `context` is a configured context's name, or the digest the router made of any other value."""
    # A refused request may name anything as its context: a name only when well formed.
    if isinstance(context, str) and not CONTEXT_PATTERN.match(context):
        context = digest(context)
    if type_ == "patient.detokenise":
        return detokenise_event(
            principal,
            kind=kind,
            context=context,
            purpose=purpose,
            count=count,
            outcome="denied",
            detail={"reason": reason, **(work or {})},
        )
    return build_event(
        source=SOURCE,
        action="execute",
        type=type_,
        outcome="denied",
        principal=principal,
        entity_type="patient_token",
        count=count,
        detail={"kind": kind, "context": context, "reason": reason},
    )
