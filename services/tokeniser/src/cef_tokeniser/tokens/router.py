"""HTTP endpoints: POST /v1/tokenise, /v1/retokenise and /v1/detokenise."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from cef_common.auth import Principal, PrincipalDep, require_scopes
from cef_common.errors import AppError, Forbidden, PayloadTooLarge, Unprocessable
from cef_common.openapi import json_body, problems, requires
from cef_common.params import MAX_INTEGER
from cef_common.redact import carries_identifier, digest, is_uuid, known_or_digest
from cef_tokeniser.config import Settings
from cef_tokeniser.metrics import Reidentifications
from cef_tokeniser.tokens import schemas
from cef_tokeniser.tokens.exceptions import AuditUnavailable, ContextNotAllowed
from cef_tokeniser.tokens.kinds import KINDS
from cef_tokeniser.tokens.service import TokenService, refusal_event

router = APIRouter(prefix="/v1", tags=["tokens"])

TokeniseCaller = Annotated[Principal, Depends(require_scopes("tokenise"))]

_UNAVAILABLE = problems(503, described={503: "the token store or the audit log is unavailable: retry later"})


def _service(request: Request) -> TokenService:
    service: TokenService = request.app.state.token_service
    return service


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _invalid(field: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"{field}: {message}",
        code="validation-error",
        extra={"errors": [{"field": field, "message": message}]},
    )


# Bodies above this are parsed off the event loop, which a 64 MiB parse would otherwise hold up.
_PARSE_IN_THREAD_BYTES = 256 * 1024


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = (
            await run_in_threadpool(orjson.loads, raw)
            if len(raw) > _PARSE_IN_THREAD_BYTES
            else orjson.loads(raw)
        )
    except orjson.JSONDecodeError:
        raise _invalid("body", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _invalid("body", "the body must be a JSON object")
    return body


def _kind(body: dict[str, Any]) -> str:
    kind = body.get("kind")
    if kind not in KINDS:
        raise _invalid("kind", f"must be one of {', '.join(KINDS)}")
    return str(kind)


def _batch(body: dict[str, Any], field: str, settings: Settings) -> list[Any]:
    items = body.get(field)
    if not isinstance(items, list):
        raise _invalid(field, "must be a list of strings (null for a missing value)")
    if len(items) > settings.max_batch_values:
        raise PayloadTooLarge(
            f"{field} holds {len(items)} items; send at most {settings.max_batch_values} per request"
        )
    return items


def _context(body: dict[str, Any], settings: Settings) -> str:
    context = body.get("context")
    if context is None:
        return settings.default_context
    if not isinstance(context, str) or not context:
        raise _invalid("context", "must be a context name, or left out for the default")
    return context


def _recordable_purpose(raw: object) -> str | None:
    """A refused call's purpose as its audit event may hold it: the caller's text when nothing in it
    is shaped like an identifier, else only its keyed digest and length."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    purpose = raw.strip()[:1000]
    if not carries_identifier(purpose):
        return purpose
    withheld = digest(purpose)
    return f"(withheld: digest {withheld['digest']}, {withheld['length']} characters)"


def _authorise_context(principal: Principal, context: str, settings: Settings) -> None:
    client = principal.client or principal.sub
    if context not in settings.contexts_for(client):
        allowed = sorted(settings.contexts_for(client))
        raise ContextNotAllowed(
            # Quoted only when it is a context this service knows: otherwise it is the caller's text.
            f"client {client!r} may not use "
            + (f"context {context!r}" if context in settings.known_contexts() else "this context")
            + (f"; its contexts are {', '.join(allowed)}" if allowed else "; it has no context configured")
        )


def _key_version(body: dict[str, Any]) -> int | None:
    version = body.get("key_version")
    if version is None:
        return None
    # Beyond the INTEGER column a version is stored in, the look-up itself would fail (a 5xx).
    if type(version) is not int or not 1 <= version <= MAX_INTEGER:
        raise _invalid("key_version", "must be a positive integer naming an existing key version")
    return version


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _errors(errors: list[tuple[int, str]]) -> list[dict[str, Any]]:
    return [{"index": i, "code": c} for i, c in errors]


@router.post(
    "/tokenise",
    summary="Identifiers to tokens (scope tokenise)",
    responses={200: {"model": schemas.TokeniseResponse}, **_UNAVAILABLE},
    openapi_extra=json_body(schemas.TokeniseRequest),
)
async def tokenise(request: Request, principal: TokeniseCaller) -> Response:
    """Deterministic keyed tokens, in input order; an invalid value gets null and an `errors` entry."""
    settings, service = _settings(request), _service(request)
    body = await _json_object(request)
    kind = _kind(body)
    values = _batch(body, "values", settings)
    context = _context(body, settings)
    key_version = _key_version(body)
    try:
        _authorise_context(principal, context, settings)
    except ContextNotAllowed as refusal:
        await _record_refusal(
            request,
            service,
            "patient.tokenise",
            principal,
            refusal=refusal,
            settings=settings,
            kind=kind,
            context=context,
            purpose=None,
            count=len(values),
            reason="context_not_allowed",
        )
        raise
    result = await run_in_threadpool(
        service.tokenise,
        kind=kind,
        context=context,
        values=values,
        key_version=key_version,
        principal=principal,
    )
    out: dict[str, Any] = {
        "kind": result.kind,
        "context": result.context,
        "key_version": result.key_version,
        "tokens": result.tokens,
        "errors": _errors(result.errors),
    }
    if result.outward_codes is not None:
        out["outward_codes"] = result.outward_codes
    return _json(out)


@router.post(
    "/retokenise",
    summary="Tokens of an older key version to the current one (scope tokenise)",
    responses={200: {"model": schemas.RetokeniseResponse}, **_UNAVAILABLE},
    openapi_extra=json_body(schemas.RetokeniseRequest),
)
async def retokenise(request: Request, principal: TokeniseCaller) -> Response:
    """Maps tokens to the current key version, never returning identifiers, for re-keying."""
    settings, service = _settings(request), _service(request)
    body = await _json_object(request)
    kind = _kind(body)
    tokens = _batch(body, "tokens", settings)
    context = _context(body, settings)
    try:
        _authorise_context(principal, context, settings)
    except ContextNotAllowed as refusal:
        await _record_refusal(
            request,
            service,
            "patient.retokenise",
            principal,
            refusal=refusal,
            settings=settings,
            kind=kind,
            context=context,
            purpose=None,
            count=len(tokens),
            reason="context_not_allowed",
        )
        raise
    result = await run_in_threadpool(
        service.retokenise, kind=kind, context=context, tokens=tokens, principal=principal
    )
    return _json(
        {
            "kind": result.kind,
            "key_version": result.key_version,
            "tokens": result.tokens,
            "errors": _errors(result.errors),
        }
    )


def _bounded_text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= longest and value.strip() == value


def _on_behalf_of(body: dict[str, Any]) -> dict[str, str | None]:
    """The person a peer re-identifies for, as the peer verified them from their own token."""
    raw = body.get("on_behalf_of")
    if not isinstance(raw, dict):
        raise _invalid(
            "on_behalf_of",
            'name the person who asked: {"sub", "issuer", "org"} of their verified token',
        )
    sub, issuer, org = raw.get("sub"), raw.get("issuer"), raw.get("org")
    if not _bounded_text(sub, 255):
        raise _invalid("on_behalf_of.sub", "must be the person's subject (1 to 255 characters)")
    if not _bounded_text(issuer, 255):
        raise _invalid(
            "on_behalf_of.issuer", "must be the issuer of the person's token (1 to 255 characters)"
        )
    if org is not None and not _bounded_text(org, 64):
        raise _invalid("on_behalf_of.org", "must be the person's organisation code, or null")
    return {"sub": sub, "org": org, "issuer": issuer}


def _work_reference(body: dict[str, Any]) -> tuple[str, str]:
    """The invoice and line whose query the re-identification is for."""
    invoice_id, line_ref = body.get("invoice_id"), body.get("line_ref")
    if not isinstance(invoice_id, str) or not is_uuid(invoice_id):
        raise _invalid("invoice_id", "must be the id (a UUID) of the invoice whose line is being resolved")
    if not isinstance(line_ref, str) or not _bounded_text(line_ref, 100):
        raise _invalid("line_ref", "must be the line_ref of that invoice's line (1 to 100 characters)")
    return invoice_id, line_ref


def _work_seen(body: dict[str, Any], *, peer: bool) -> dict[str, Any]:
    """What a refused re-identification's audit event may say of its work context: a peer's values
    once they are well formed, an invoice id only when it is one, anything else as a digest."""
    seen: dict[str, Any] = {}
    if "invoice_id" in body:
        seen["invoice_id"] = known_or_digest(body["invoice_id"], is_uuid)
    line_ref = body.get("line_ref")
    if line_ref is not None:
        seen["line_ref"] = line_ref if peer and _bounded_text(line_ref, 100) else digest(line_ref)
    if body.get("on_behalf_of") is not None:
        try:
            seen["on_behalf_of"] = _on_behalf_of(body) if peer else digest(body["on_behalf_of"])
        except AppError:
            seen["on_behalf_of"] = digest(body["on_behalf_of"])
    return seen


@router.post(
    "/detokenise",
    summary="Tokens back to identifiers (scope detokenise, a purpose; always audited)",
    responses={200: {"model": schemas.DetokeniseResponse}, **_UNAVAILABLE},
    # The scope is checked in the handler (so that its refusals are audited): declared here.
    openapi_extra={**json_body(schemas.DetokeniseRequest), **requires("detokenise")},
)
async def detokenise(request: Request, principal: PrincipalDep) -> Response:
    """Re-identifies tokens for a peer service (DETOKENISE_CLIENTS) with the scope, acting for a
    named person on one invoice line, with a stated purpose and the context.

    The scope is checked here rather than by a dependency so that refusals are audited too; the
    audit event is committed before any value is returned, and no value is returned without it."""
    settings, service = _settings(request), _service(request)
    # What the audit event of a refusal can say about the request, however malformed it is.
    seen: dict[str, Any] = {"kind": None, "context": None, "purpose": None, "count": 0, "work": {}}
    peer = settings.may_detokenise(issuer=principal.issuer, client=principal.client)
    try:
        body = await _json_object(request)
        raw_kind, raw_purpose, raw_tokens = body.get("kind"), body.get("purpose"), body.get("tokens")
        seen["kind"] = raw_kind if raw_kind in KINDS else None
        # A purpose is free text: kept as stated only from a configured peer, else as a digest.
        seen["purpose"] = _recordable_purpose(raw_purpose) if peer else None
        seen["count"] = len(raw_tokens) if isinstance(raw_tokens, list) else 0
        seen["context"] = body.get("context", settings.default_context)
        seen["work"] = _work_seen(body, peer=peer)
        if not peer and raw_purpose is not None:
            seen["work"]["purpose"] = digest(raw_purpose)
        if not principal.has("detokenise"):
            raise Forbidden("this request needs the scope detokenise", code="insufficient-scope")
        if not peer:
            raise Forbidden(
                "re-identification is granted only to the peer services configured in DETOKENISE_CLIENTS, "
                "whatever scope a token carries; people re-identify a line's patient through the CEF API "
                "(POST /v1/invoices/{id}/lines/{line_ref}/reidentify)",
                code="detokenise-not-allowed",
            )
        on_behalf_of = _on_behalf_of(body)
        invoice_id, line_ref = _work_reference(body)
        kind = _kind(body)
        tokens = _batch(body, "tokens", settings)
        if not isinstance(raw_purpose, str) or not raw_purpose.strip():
            raise _invalid("purpose", "state why the identities are needed (a non-empty purpose is required)")
        purpose = raw_purpose.strip()
        if len(purpose) > 1000:
            raise _invalid("purpose", "must be at most 1000 characters")
        if carries_identifier(purpose):
            raise _invalid(
                "purpose", "must not hold an NHS number, a date or a postcode: it is audited as text"
            )
        context = _context(body, settings)
        _authorise_context(principal, context, settings)
    except AppError as refusal:
        await _record_refusal(
            request,
            service,
            "patient.detokenise",
            principal,
            refusal=refusal,
            settings=settings,
            kind=seen["kind"],
            context=seen["context"],
            purpose=seen["purpose"],
            count=seen["count"],
            reason=refusal.code,
            work=seen["work"],
        )
        raise
    result = await run_in_threadpool(
        service.detokenise,
        kind=kind,
        context=context,
        tokens=tokens,
        purpose=purpose,
        principal=principal,
        work={"on_behalf_of": on_behalf_of, "invoice_id": invoice_id, "line_ref": line_ref},
    )
    reidentifications: Reidentifications = request.app.state.reidentifications
    reidentifications.record(kind, resolved=len(tokens) - len(result.errors))
    return _json({"values": result.values, "errors": _errors(result.errors)})


async def _record_refusal(
    request: Request,
    service: TokenService,
    type_: str,
    principal: Principal,
    *,
    refusal: AppError,
    settings: Settings,
    kind: str | None,
    context: object,
    purpose: str | None,
    count: int,
    reason: str,
    work: dict[str, Any] | None = None,
) -> None:
    """Records the refusal's own event (so the shared refusal auditor does not record it again).
    A context is recorded by name only when it is one this tokeniser has configured."""
    event = refusal_event(
        type_,
        principal,
        kind=kind,
        context=known_or_digest(context, settings.known_contexts()),
        purpose=purpose,
        count=count,
        reason=reason,
        work=work,
    )
    try:
        await run_in_threadpool(service.record, event)
        # Recorded here, so the shared refusal hook passes it by (the error handler still counts it).
        refusal.audited = True
    except AuditUnavailable:
        # The caller is refused either way; the service has logged the failure to record it.
        pass
