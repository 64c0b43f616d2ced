"""HTTP endpoints: POST /v1/tokenise, /v1/retokenise and /v1/detokenise."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from cef_common.auth import Principal, PrincipalDep, require_scopes
from cef_common.errors import AppError, Forbidden, PayloadTooLarge, Unprocessable
from cef_tokeniser.config import Settings
from cef_tokeniser.tokens import schemas
from cef_tokeniser.tokens.exceptions import AuditUnavailable, ContextNotAllowed
from cef_tokeniser.tokens.kinds import KINDS
from cef_tokeniser.tokens.service import TokenService, refusal_event

router = APIRouter(prefix="/v1", tags=["tokens"])

TokeniseCaller = Annotated[Principal, Depends(require_scopes("tokenise"))]


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    }


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


def _authorise_context(principal: Principal, context: str, settings: Settings) -> None:
    client = principal.client or principal.sub
    if context not in settings.contexts_for(client):
        allowed = sorted(settings.contexts_for(client))
        raise ContextNotAllowed(
            f"client {client!r} may not use context {context!r}"
            + (f"; its contexts are {', '.join(allowed)}" if allowed else "; it has no context configured")
        )


def _key_version(body: dict[str, Any]) -> int | None:
    version = body.get("key_version")
    if version is None:
        return None
    if type(version) is not int or version < 1:
        raise _invalid("key_version", "must be a positive integer naming an existing key version")
    return version


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _errors(errors: list[tuple[int, str]]) -> list[dict[str, Any]]:
    return [{"index": i, "code": c} for i, c in errors]


@router.post(
    "/tokenise",
    summary="Identifiers to tokens (scope tokenise)",
    responses={200: {"model": schemas.TokeniseResponse}},
    openapi_extra=_body_doc(schemas.TokeniseRequest),
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
    except ContextNotAllowed:
        await _record_refusal(
            service,
            "patient.tokenise",
            principal,
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
    responses={200: {"model": schemas.RetokeniseResponse}},
    openapi_extra=_body_doc(schemas.RetokeniseRequest),
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
    except ContextNotAllowed:
        await _record_refusal(
            service,
            "patient.retokenise",
            principal,
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


@router.post(
    "/detokenise",
    summary="Tokens back to identifiers (scope detokenise, a purpose; always audited)",
    responses={200: {"model": schemas.DetokeniseResponse}},
    openapi_extra=_body_doc(schemas.DetokeniseRequest),
)
async def detokenise(request: Request, principal: PrincipalDep) -> Response:
    """Re-identifies tokens for a caller with the scope, a stated purpose and the context.

    The scope is checked here rather than by a dependency so that refusals are audited too; the
    audit event is committed before any value is returned, and no value is returned without it."""
    settings, service = _settings(request), _service(request)
    # What the audit event of a refusal can say about the request, however malformed it is.
    seen: dict[str, Any] = {"kind": None, "context": None, "purpose": None, "count": 0}
    try:
        body = await _json_object(request)
        raw_kind, raw_purpose, raw_tokens = body.get("kind"), body.get("purpose"), body.get("tokens")
        seen["kind"] = raw_kind if raw_kind in KINDS else None
        seen["purpose"] = raw_purpose.strip()[:1000] if isinstance(raw_purpose, str) else None
        seen["count"] = len(raw_tokens) if isinstance(raw_tokens, list) else 0
        seen["context"] = body.get("context", settings.default_context)
        if not principal.has("detokenise"):
            raise Forbidden("this request needs the scope detokenise", code="insufficient-scope")
        kind = _kind(body)
        tokens = _batch(body, "tokens", settings)
        if not isinstance(raw_purpose, str) or not raw_purpose.strip():
            raise _invalid("purpose", "state why the identities are needed (a non-empty purpose is required)")
        purpose = raw_purpose.strip()
        if len(purpose) > 1000:
            raise _invalid("purpose", "must be at most 1000 characters")
        context = _context(body, settings)
        _authorise_context(principal, context, settings)
    except AppError as refusal:
        await _record_refusal(
            service,
            "patient.detokenise",
            principal,
            kind=seen["kind"],
            context=seen["context"],
            purpose=seen["purpose"],
            count=seen["count"],
            reason=refusal.code,
        )
        raise
    result = await run_in_threadpool(
        service.detokenise, kind=kind, context=context, tokens=tokens, purpose=purpose, principal=principal
    )
    return _json({"values": result.values, "errors": _errors(result.errors)})


async def _record_refusal(
    service: TokenService,
    type_: str,
    principal: Principal,
    *,
    kind: str | None,
    context: str | None,
    purpose: str | None,
    count: int,
    reason: str,
) -> None:
    event = refusal_event(
        type_, principal, kind=kind, context=context, purpose=purpose, count=count, reason=reason
    )
    try:
        await run_in_threadpool(service.record, event)
    except AuditUnavailable:
        # The caller is refused either way; the service has logged the failure to record it.
        pass
