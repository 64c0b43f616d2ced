"""The OpenAPI document each service publishes, and the self-served pages that show it.

FastAPI's own document knows neither the bearer tokens nor the problem+json errors these services
answer with. `install_openapi` completes it from the routes themselves (their scope guards, path
parameters and bodies), so that a route added later is documented the same way with no more code;
routes declare only what is theirs alone (`responses=problems(...)`, a hand-read body's schema)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute

from cef_common.auth import ScopeRequirement, get_principal, scope_requirement
from cef_common.errors import PROBLEM_BASE, PROBLEM_JSON

BEARER = "bearerAuth"
PROBLEM = "Problem"
PROBLEM_ITEM = "ProblemError"
REF_TEMPLATE = "#/components/schemas/{model}"
DOCS_STATIC = "/docs-static"
_STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM,
    "type": "object",
    "description": "An RFC 9457 problem (media type application/problem+json). Program against `code`, "
    "which is stable; `detail` says what to change. A problem never echoes an identifier sent.",
    "required": ["type", "code", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": f"{PROBLEM_BASE} followed by the code"},
        "code": {"type": "string", "description": "stable machine-readable code, e.g. insufficient-scope"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what went wrong and what to change"},
        "instance": {
            "type": "string",
            "description": "the template of the route that answered, e.g. /v1/invoices/{invoice_id}",
        },
        "errors": {"type": "array", "items": ref(PROBLEM_ITEM), "description": "one entry per problem"},
    },
    # Some problems carry more (a reference file's `dataset` and `error_count`, a line's `line`).
    "additionalProperties": True,
}
PROBLEM_ITEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM_ITEM,
    "type": "object",
    "required": ["message"],
    "properties": {
        "field": {"type": "string", "description": "where, as a dotted path (events.3.action)"},
        "message": {"type": "string"},
    },
    # A file's problems name a line and a column instead of a field.
    "additionalProperties": True,
}


def _bearer_scheme(audience: str) -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": (
            "A JWT of at most 8 KiB, signed ES256 or RS256 by an issuer this service trusts (setting "
            "TRUSTED_ISSUERS; in development `cef token --scope ... --aud "
            f"{audience}` mints one). Claims: `iss`, `sub`, `aud` (must be `{audience}`), `exp` and `iat` "
            "are required; `scope` is the space-separated list of scopes granted (each operation lists "
            "those it needs); `org` is the caller's ODS code (provider or commissioner), needed for "
            "invoices; `client_id` or `azp` names a calling service."
        ),
    }


@dataclass(frozen=True)
class _Problem:
    description: str
    code: str
    title: str
    detail: str


_PROBLEMS: dict[int, _Problem] = {
    400: _Problem(
        "The request cannot be used as it is (e.g. a cursor not passed back unchanged); `detail` says why",
        "bad-request",
        "Bad request",
        "the request cannot be used as it is",
    ),
    401: _Problem(
        "No bearer token, or one this service does not accept (expired, another audience, unknown "
        "issuer or key); see WWW-Authenticate",
        "unauthorized",
        "Unauthorized",
        "no bearer token: send 'Authorization: Bearer <JWT>'",
    ),
    403: _Problem(
        "The token lacks a scope this operation needs, or names another organisation",
        "insufficient-scope",
        "Forbidden",
        "this request needs the scope ...",
    ),
    404: _Problem(
        "Nothing with this id that the caller may see (the same answer whether it exists or not)",
        "not-found",
        "Not found",
        "no such resource visible to the caller",
    ),
    408: _Problem(
        "The body stalled between two parts for longer than the upload idle timeout; nothing was kept",
        "request-timeout",
        "Request timeout",
        "no part of the request body arrived for 30 s, so the request was cut off and nothing of it was "
        "kept; send it again",
    ),
    409: _Problem(
        "The request conflicts with the state of what it names; `detail` says what to do",
        "conflict",
        "Conflict",
        "the request conflicts with the current state",
    ),
    410: _Problem("What was asked for existed once and is gone", "gone", "Gone", "it is gone"),
    413: _Problem(
        "The body (or a batch in it) is over this endpoint's limit",
        "payload-too-large",
        "Payload too large",
        "the request body is 20971520 bytes; the limit is 10485760 bytes",
    ),
    422: _Problem(
        "The request is not valid: `errors` names each field and what is wrong with it (never its value)",
        "validation-error",
        "Request is not valid",
        "a field does not match the documented schema",
    ),
    429: _Problem(
        "Too many requests of this kind; see Retry-After",
        "too-many-requests",
        "Too many requests",
        "the limit is reached; try again later",
    ),
    503: _Problem(
        "A service this one depends on is unavailable; nothing was changed, retry later",
        "service-unavailable",
        "Service unavailable",
        "a service this request needs is unavailable: retry later",
    ),
}


def problems(*statuses: int, described: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the problem statuses a route answers beyond those every route of its kind does
    (401/403 when authenticated, 404 with a path id, 408/413/422 with a body: added for all)."""
    described = described or {}
    out: dict[int | str, dict[str, Any]] = {}
    for status in (*statuses, *described):
        default = _PROBLEMS.get(status)
        out[status] = {"description": described.get(status) or (default.description if default else "")}
    return out


def requires(*scopes: str, any_of: bool = False) -> dict[str, Any]:
    """`openapi_extra=` for a route that checks its scopes by hand (to audit its refusals)."""
    return {"security": _security(_alternatives([ScopeRequirement(scopes, any_of)]))}


def schema_of(tp: Any, *, mode: JsonSchemaMode = "validation") -> dict[str, Any]:
    """The schema of a model or type, pointing into the components; its `$defs` are moved there
    when the document is built (a body read by hand is not known to FastAPI)."""
    schema = TypeAdapter(tp).json_schema(ref_template=REF_TEMPLATE, mode=mode)
    defs = dict(schema.pop("$defs", {}))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        defs[tp.__name__] = schema
        schema = ref(tp.__name__)
    if defs:
        schema["$defs"] = defs
    return schema


# Each model's examples as written: FastAPI's encoder drops every null of the document (examples
# included), so `complete` puts them back from here. Keyed by model name, as components are.
_MODEL_EXAMPLES: dict[str, list[Any]] = {}


def model_examples(values: list[Any]) -> Callable[[dict[str, Any], type[Any]], None]:
    """`json_schema_extra=` giving a model its examples in the OpenAPI document; the first one is
    shown on every operation that takes or answers the model."""

    def extra(schema: dict[str, Any], model: type[Any]) -> None:
        schema["examples"] = copy.deepcopy(values)
        _MODEL_EXAMPLES[model.__name__] = values

    return extra


def json_body(tp: Any, *, example: Any = None) -> dict[str, Any]:
    """`openapi_extra=` documenting a JSON body that the route reads by hand."""
    media: dict[str, Any] = {"schema": schema_of(tp)}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


# What the operations endpoints answer (they return plain responses FastAPI cannot describe).
_READINESS: dict[str, Any] = {
    "type": "object",
    "required": ["status", "service", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "service": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def health_responses(service: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": {"status": "ok", "service": service}}}}}


def ready_responses(service: str) -> dict[int | str, dict[str, Any]]:
    def answer(description: str, example: dict[str, Any]) -> dict[str, Any]:
        media = {"schema": _READINESS, "example": {"service": service, **example}}
        return {"description": description, "content": {"application/json": media}}

    return {
        200: answer(
            "The database answers and its migrations are at head",
            {"status": "ready", "checks": {"database": "ok", "migrations": "at head"}},
        ),
        503: answer(
            "Not ready: the database is unreachable or not migrated to head",
            {"status": "not ready", "checks": {"database": "unreachable: OperationalError"}},
        ),
    }


JWKS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A JSON Web Key Set (RFC 7517) of this service's public signing keys",
        "content": {
            "application/json": {
                "example": {
                    "keys": [
                        {
                            "kty": "EC",
                            "crv": "P-256",
                            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
                            "kid": "Xq3bW0u8h5dJ2kLr9sVtY1cN4mP7aE6fG0iZoQwHnB8",
                            "alg": "ES256",
                            "use": "sig",
                        }
                    ]
                }
            }
        },
    }
}


def operation_id(route: APIRoute) -> str:
    """An operation's id is its handler's name (`list_invoices`): what a generated client calls it."""
    return route.name


# --- the document -----------------------------------------------------------------------------------


def install_openapi(app: FastAPI, *, audience: str) -> None:
    """Completes the app's document when it is first asked for (after every router is included)."""

    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        # FastAPI builds the document again when routes change; each new one is completed once.
        doc = FastAPI.openapi(app)
        if not completed or completed[0] is not doc:
            completed[:] = [complete(doc, app.routes, audience=audience)]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def complete(doc: dict[str, Any], routes: list[BaseRoute], *, audience: str) -> dict[str, Any]:
    """FastAPI's document of `routes`, completed in place: security, problems, examples."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _hoist_defs(doc.get("paths", {}), schemas)
    schemas.setdefault(PROBLEM, PROBLEM_SCHEMA)
    schemas.setdefault(PROBLEM_ITEM, PROBLEM_ITEM_SCHEMA)
    components.setdefault("securitySchemes", {})[BEARER] = _bearer_scheme(audience)
    for route in _api_routes(routes):
        item = doc.get("paths", {}).get(route.path_format, {})
        for method in sorted(route.methods or ()):
            operation = item.get(method.lower())
            if operation is not None:
                _complete_operation(operation, route, schemas)
    for name, schema in schemas.items():
        written = _written_examples(name)
        if written and "examples" in schema:
            schema["examples"] = copy.deepcopy(written)
    _drop_unused(doc, "HTTPValidationError")
    _drop_unused(doc, "ValidationError")
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc


def _api_routes(routes: list[BaseRoute]) -> Iterator[RouteContext]:
    """Every documented API route with its full path, through included routers as FastAPI sees them."""
    for route in iter_route_contexts(routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def _calls(dependant: Dependant | None) -> Iterator[Any]:
    if dependant is None:
        return
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _alternatives(requirements: list[ScopeRequirement]) -> list[list[str]]:
    """Every set of scopes that satisfies all the requirements (OpenAPI lists alternatives)."""
    options: list[list[str]] = [[]]
    for req in requirements:
        if req.any_of:
            options = [[*o, s] for o in options for s in req.scopes]
        else:
            options = [[*o, *req.scopes] for o in options]
    return options


def _security(options: list[list[str]]) -> list[dict[str, list[str]]]:
    return [{BEARER: sorted(set(o))} for o in options]


def _route_security(route: RouteContext) -> list[dict[str, list[str]]]:
    calls = list(_calls(route.dependant))
    requirements = [r for r in (scope_requirement(c) for c in calls) if r is not None]
    if requirements:
        return _security(_alternatives(requirements))
    if get_principal in calls:
        return [{BEARER: []}]
    return []


def _complete_operation(operation: dict[str, Any], route: RouteContext, schemas: dict[str, Any]) -> None:
    if "security" not in operation:
        operation["security"] = _route_security(route)
    security: list[dict[str, list[str]]] = operation["security"]
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted: set[int] = set()
    if security:
        wanted |= {401, 403}
        operation["description"] = _with_security_note(operation.get("description", ""), security)
    path = route.path_format or ""
    if "{" in path:
        wanted.add(404)
    if "requestBody" in operation:
        wanted |= {408, 413, 422}
    for status in sorted(wanted):
        responses.setdefault(str(status), {"description": _PROBLEMS[status].description})
    for code, response in responses.items():
        if code.isdigit() and int(code) >= 400:
            _as_problem(response, int(code), path, operation)
        elif code.startswith("2"):
            _fill_examples(response.get("content", {}), schemas)
    if "requestBody" in operation:
        _fill_examples(operation["requestBody"].get("content", {}), schemas)
    operation["responses"] = dict(sorted(responses.items()))


def _with_security_note(description: str, security: list[dict[str, list[str]]]) -> str:
    options = [" and ".join(f"`{s}`" for s in alt[BEARER]) for alt in security if alt[BEARER]]
    note = (
        f"Needs a bearer token with the scope {' or '.join(options)}."
        if options
        else "Needs a bearer token (any scope)."
    )
    return f"{description}\n\n{note}" if description else note


def _as_problem(response: dict[str, Any], status: int, path: str, operation: dict[str, Any]) -> None:
    content: dict[str, Any] = response.setdefault("content", {})
    json_media = content.get("application/json")
    if json_media is not None and "HTTPValidationError" in json.dumps(json_media.get("schema", {})):
        # FastAPI's own 422 model: these services answer a problem instead.
        del content["application/json"]
    if any(media.get("schema") for mt, media in content.items() if mt != PROBLEM_JSON):
        return  # a response of its own shape (readyz's 503)
    default = _PROBLEMS.get(status)
    if not response.get("description") or response["description"] == "Validation Error":
        response["description"] = default.description if default else HTTPStatus(status).phrase
    media = content.setdefault(PROBLEM_JSON, {})
    media.setdefault("schema", ref(PROBLEM))
    if "example" not in media and "examples" not in media:
        media["example"] = _problem_example(status, path, operation, response.get("description", ""))
    for other in [mt for mt in content if mt != PROBLEM_JSON]:
        del content[other]
    if status == 401:
        response.setdefault("headers", {})["WWW-Authenticate"] = {
            "description": 'Bearer error="invalid_token" (or "invalid_request" when no token was sent)',
            "schema": {"type": "string"},
        }


# A route's own description of a problem opens with its code: "duplicate-invoice: ...".
_OPENING_CODE = re.compile(r"([a-z][a-z0-9]*(?:-[a-z0-9]+)+):\s*(.*)", re.DOTALL)


def _problem_example(status: int, path: str, operation: dict[str, Any], description: str) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = operation.get("security", [])
    default = _PROBLEMS.get(status)
    phrase = HTTPStatus(status).phrase
    code = default.code if default else f"http-{status}"
    detail = default.detail if default else phrase
    if description and status not in (401, 403) and (default is None or description != default.description):
        # The route said what it answers: its example says the same.
        opening = _OPENING_CODE.match(description)
        if opening:
            code, description = opening.group(1), opening.group(2)
        detail = description.split("; ")[0] or detail
    if status == 403 and security and security[0][BEARER]:
        detail = f"this request needs the scope {' and '.join(security[0][BEARER])}"
    example: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "code": code,
        "title": default.title if default else phrase,
        "status": status,
        "detail": detail,
        "instance": path,
    }
    if status == 422:
        named = [p["name"] for p in operation.get("parameters", []) if p.get("in") in ("query", "path")]
        field = "body" if "requestBody" in operation or not named else named[-1]
        message = "does not match the documented schema"
        example["errors"] = [{"field": field, "message": message}]
        if default is not None and detail == default.detail:
            example["detail"] = f"{field}: {message}"
    return example


def _written_examples(name: str) -> list[Any] | None:
    return _MODEL_EXAMPLES.get(name.removesuffix("-Input").removesuffix("-Output"))


def _examples_of(schema: Any, schemas: dict[str, Any]) -> list[tuple[str, Any]]:
    if not isinstance(schema, dict):
        return []
    target, name = schema, str(schema.get("title", "example"))
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        target = schemas.get(name, {})
    examples = _written_examples(name) or target.get("examples")
    if isinstance(examples, list) and examples:
        return [(name, examples[0])]
    found: list[tuple[str, Any]] = []
    for key in ("anyOf", "oneOf"):
        for alternative in target.get(key, []):
            found.extend(_examples_of(alternative, schemas))
    return found


def _fill_examples(content: dict[str, Any], schemas: dict[str, Any]) -> None:
    """An example on each media type, from its model's own `examples` when it has none."""
    for media in content.values():
        if "example" in media or "examples" in media:
            continue
        found = _examples_of(media.get("schema"), schemas)
        if len(found) == 1:
            media["example"] = copy.deepcopy(found[0][1])
        elif found:
            media["examples"] = {
                name: {"summary": name, "value": copy.deepcopy(value)} for name, value in found
            }


def _hoist_defs(node: Any, schemas: dict[str, Any]) -> None:
    """Moves the `$defs` of schemas given by hand into the components, where their refs point."""
    if isinstance(node, dict):
        defs = node.pop("$defs", None)
        if isinstance(defs, dict):
            for name, schema in defs.items():
                _hoist_defs(schema, schemas)
                schemas.setdefault(name, schema)
        for value in node.values():
            _hoist_defs(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _hoist_defs(value, schemas)


def _drop_unused(doc: dict[str, Any], name: str) -> None:
    schemas = doc["components"]["schemas"]
    if name not in schemas:
        return
    rest = {k: v for k, v in schemas.items() if k != name}
    text = json.dumps({"paths": doc.get("paths", {}), "schemas": rest})
    if f'"{REF_TEMPLATE.format(model=name)}"' not in text:
        del schemas[name]


# --- the pages ---------------------------------------------------------------------------------------


def serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from this service's own copy of their scripts (a closed
    network has no CDN). Like the document they show, they need no token."""
    app.mount(DOCS_STATIC, StaticFiles(directory=_STATIC_DIR), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )

    # Plain routes, as FastAPI's own pages are: no dependencies, outside the document.
    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
