"""The OpenAPI document the shared factory completes, and the API pages it serves without a CDN."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict

from cef_common.auth import Principal, PrincipalDep, require_scopes, scope_requirement
from cef_common.openapi import install_openapi, json_body, problems, requires
from cef_common.testing import app_client

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _problem_schema(response: dict[str, Any]) -> Any:
    return response["content"]["application/problem+json"]["schema"]


async def test_each_operation_names_the_scopes_its_guard_asks_for(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        doc = (await client.get("/openapi.json")).json()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert "`aud` (must be `common-test`)" in scheme["description"]
    paths = doc["paths"]
    assert paths["/v1/whoami"]["get"]["security"] == [{"bearerAuth": ["things:read"]}]
    assert paths["/v1/widgets"]["post"]["security"] == [{"bearerAuth": ["things:write"]}]
    for public in ("/healthz", "/readyz", "/.well-known/jwks.json"):
        assert paths[public]["get"]["security"] == []
        assert "401" not in paths[public]["get"]["responses"]


async def test_errors_are_documented_as_problems_and_fastapis_422_model_is_gone(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    create = paths["/v1/widgets"]["post"]["responses"]
    # Authenticated: 401 and 403; a body: 408, 413 and 422.
    for status in ("401", "403", "408", "413", "422"):
        assert _problem_schema(create[status]) == PROBLEM_REF, status
        assert list(create[status]["content"]) == ["application/problem+json"], status
        assert create[status]["content"]["application/problem+json"]["example"]["status"] == int(status)
    assert "WWW-Authenticate" in create["401"]["headers"]
    assert create["403"]["content"]["application/problem+json"]["example"]["detail"].endswith("things:write")
    # A path parameter: 404; a GET without one has none.
    assert _problem_schema(paths["/v1/orgs/{org}/things"]["get"]["responses"]["404"]) == PROBLEM_REF
    assert "404" not in paths["/v1/whoami"]["get"]["responses"]
    schemas = doc["components"]["schemas"]
    assert {"Problem", "ProblemError"} <= set(schemas)
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(schemas)
    assert set(schemas["Problem"]["required"]) == {"type", "code", "title", "status", "detail"}


async def test_a_problem_as_sent_matches_the_documented_schema(make_app: Any) -> None:
    import jsonschema_rs

    async with app_client(make_app()) as client:
        doc = (await client.get("/openapi.json")).json()
        answer = await client.post("/v1/widgets", json={"name": ""})
    assert answer.status_code == 401
    schema = {**PROBLEM_REF, "components": doc["components"]}
    jsonschema_rs.validate(schema, answer.json())


def _app_with(router: APIRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    install_openapi(app, audience="things")
    return app


class Part(BaseModel):
    size: int


class Parcel(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"parts": [{"size": 3}]}]})

    parts: list[Part]


# At module level: the handlers' annotations are resolved in this module's namespace.
_either = require_scopes("things:read", "things:audit", any_of=True)
Either = Annotated[Principal, Depends(_either)]


def test_any_of_scopes_are_alternatives_and_scopes_checked_by_hand_can_be_declared() -> None:
    router = APIRouter()
    requirement = scope_requirement(_either)
    assert requirement is not None
    assert (requirement.scopes, requirement.any_of) == (("things:read", "things:audit"), True)

    @router.get("/either")
    def read(principal: Either) -> dict[str, str]:
        return {}

    @router.post("/by-hand", openapi_extra=requires("things:reveal"))
    def by_hand(principal: PrincipalDep) -> dict[str, str]:
        return {}

    @router.get("/any-token")
    def any_token(principal: PrincipalDep) -> dict[str, str]:
        return {}

    doc = _app_with(router).openapi()
    assert doc["paths"]["/either"]["get"]["security"] == [
        {"bearerAuth": ["things:read"]},
        {"bearerAuth": ["things:audit"]},
    ]
    assert doc["paths"]["/by-hand"]["post"]["security"] == [{"bearerAuth": ["things:reveal"]}]
    assert doc["paths"]["/any-token"]["get"]["security"] == [{"bearerAuth": []}]
    assert "401" in doc["paths"]["/any-token"]["get"]["responses"]
    assert scope_requirement(any_token) is None


def test_a_body_read_by_hand_is_documented_with_its_models_and_their_examples() -> None:
    router = APIRouter()

    @router.post(
        "/parcels/{parcel_id}",
        openapi_extra=json_body(Parcel),
        responses={200: {"model": Parcel}, **problems(409, described={409: "parcel-sealed: too late"})},
    )
    async def post_parcel(parcel_id: str, request: Request) -> dict[str, str]:
        return {}

    doc = _app_with(router).openapi()
    text = json.dumps(doc)
    assert "$defs" not in text
    for ref in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert ref in doc["components"]["schemas"], ref
    operation = doc["paths"]["/parcels/{parcel_id}"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Parcel"}
    assert body["example"] == {"parts": [{"size": 3}]}
    assert operation["responses"]["200"]["content"]["application/json"]["example"] == {"parts": [{"size": 3}]}
    assert operation["responses"]["409"]["description"] == "parcel-sealed: too late"
    assert _problem_schema(operation["responses"]["409"]) == PROBLEM_REF
    # No token is read, so none is asked for: the document follows the route, not a default.
    assert operation["security"] == []
    assert {"408", "413", "422", "404"} <= set(operation["responses"])


_LOCAL = re.compile(r'(?:src|href)="([^"]+)"|url: \'([^\']+)\'|spec-url="([^"]+)"')


async def test_the_api_pages_load_only_what_the_service_serves_itself(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        for page in ("/docs", "/redoc"):
            answer = await client.get(page)
            assert answer.status_code == 200, page
            assert answer.headers["content-type"].startswith("text/html")
            urls = [next(u for u in match if u) for match in _LOCAL.findall(answer.text)]
            assert "/openapi.json" in urls, page
            assert len(urls) >= 3, urls
            # Nothing from another host: a closed network has no CDN and no font service.
            assert "http://" not in answer.text, page
            assert "https://" not in answer.text, page
            for url in urls:
                assert url.startswith("/"), url
                assert not url.startswith("//"), url
                asset = await client.get(url)
                assert asset.status_code == 200, url
                assert asset.content, url
        # The pages are not operations of the API.
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert not {"/docs", "/redoc"} & set(paths)
