"""Errors as problem+json: application errors, validation, body limits, the unexpected."""

from __future__ import annotations

from typing import Any

import pytest

from cef_common.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    validation_errors,
)
from cef_common.testing import app_client

AUD = "common-test"


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"https://cef.nhs.invalid/problems/{body['code']}"
    assert body["title"]
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (BadRequest, 400),
        (Forbidden, 403),
        (NotFound, 404),
        (Conflict, 409),
        (PayloadTooLarge, 413),
        (Unprocessable, 422),
        (ServiceUnavailable, 503),
    ],
)
def test_error_classes_carry_their_status(cls: type[AppError], status: int) -> None:
    err = cls("what to change", code="custom-code", extra={"k": "v"})
    assert (err.status, err.code, err.extra, err.detail) == (
        status,
        "custom-code",
        {"k": "v"},
        "what to change",
    )
    assert cls("x").code != "custom-code"


def test_unauthorized_carries_a_bearer_challenge() -> None:
    assert Unauthorized("x").headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}


async def test_an_app_error_is_problem_json(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.get("/v1/missing", headers=dev_issuer.headers("things:read", aud=AUD))
    body = problem(response, 404)
    assert body["code"] == "widget-not-found"
    assert body["detail"] == "widget W1 does not exist; list /v1/widgets for the names"
    assert body["instance"] == "/v1/missing"
    assert body["widget"] == "W1"
    assert response.headers["x-request-id"]


async def test_unknown_routes_and_methods_are_problem_json(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        assert problem(await client.get("/v1/nowhere"), 404)["code"] == "not-found"
        assert problem(await client.delete("/healthz"), 405)["code"] == "method-not-allowed"


async def test_a_malformed_json_body_is_422_naming_the_body(make_app: Any, dev_issuer: Any) -> None:
    headers = {**dev_issuer.headers("things:write", aud=AUD), "Content-Type": "application/json"}
    async with app_client(make_app()) as client:
        response = await client.post("/v1/widgets", content=b'{"name": "w",', headers=headers)
    body = problem(response, 422)
    assert body["code"] == "validation-error"
    assert body["errors"][0]["field"] == "body"
    assert body["detail"].startswith("body: the body is not valid JSON")
    assert "character 13" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "w", "count": "many"}, "count"),
        ({"count": 2}, "name"),
        ({"name": ""}, "name"),
        ([1, 2], "body"),
    ],
)
async def test_an_invalid_field_is_422_naming_it(
    make_app: Any, dev_issuer: Any, payload: Any, field: str
) -> None:
    async with app_client(make_app()) as client:
        response = await client.post(
            "/v1/widgets", json=payload, headers=dev_issuer.headers("things:write", aud=AUD)
        )
    body = problem(response, 422)
    assert body["errors"][0]["field"] == field
    assert body["detail"].startswith(f"{field}: ")


async def test_validation_errors_never_echo_the_input(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.post(
            "/v1/widgets",
            json={"name": "w", "count": "9434765919x"},
            headers=dev_issuer.headers("things:write", aud=AUD),
        )
    assert "9434765919" not in response.text


async def test_a_declared_body_over_the_limit_is_413(make_app: Any, dev_issuer: Any) -> None:
    headers = dev_issuer.headers("things:write", aud=AUD)
    async with app_client(make_app(max_body_bytes=64)) as client:
        assert (await client.post("/v1/echo", content=b"x" * 64, headers=headers)).json() == {"bytes": 64}
        body = problem(await client.post("/v1/echo", content=b"x" * 65, headers=headers), 413)
        assert "65 bytes" in body["detail"]
        assert "64" in body["detail"]
        # Refused before authentication: nothing of an oversized body is read.
        problem(await client.post("/v1/echo", content=b"x" * 65), 413)


async def chunks(n: int, size: int = 40) -> Any:
    for _ in range(n):
        yield b"x" * size


@pytest.mark.parametrize("path", ["/v1/echo", "/v1/widgets"])
async def test_a_chunked_body_over_the_limit_is_413(make_app: Any, dev_issuer: Any, path: str) -> None:
    """No Content-Length: the limit is enforced while reading, for raw and for JSON endpoints."""
    headers = {**dev_issuer.headers("things:write", aud=AUD), "Content-Type": "application/json"}
    async with app_client(make_app(max_body_bytes=100)) as client:
        response = await client.post(path, content=chunks(5), headers=headers)
        assert "content-length" not in response.request.headers
        body = problem(response, 413)
        assert "100 bytes" in body["detail"]
        assert body["instance"] == path
        ok = await client.post("/v1/echo", content=chunks(2), headers=headers)
        assert ok.json() == {"bytes": 80}


async def test_per_path_limits_override_the_default(make_app: Any, dev_issuer: Any) -> None:
    headers = dev_issuer.headers("things:write", aud=AUD)
    app = make_app(max_body_bytes=10, body_limits=[("/v1/", 50), ("/v1/echo", 1000)])
    async with app_client(app) as client:
        assert (await client.post("/v1/echo", content=b"x" * 1000, headers=headers)).status_code == 200
        problem(await client.post("/v1/echo", content=b"x" * 1001, headers=headers), 413)
        problem(await client.post("/v1/widgets", content=b"x" * 51, headers=headers), 413)


async def test_an_unexpected_error_is_a_500_that_reveals_nothing(make_app: Any, dev_issuer: Any) -> None:
    import httpx

    from cef_common.testing import ServerThread

    # Over a real server: in process, the test client would re-raise the exception instead.
    with ServerThread(make_app()) as server:
        response = httpx.get(f"{server.url}/v1/crash", headers=dev_issuer.headers("things:read", aud=AUD))
    body = problem(response, 500)
    assert body["code"] == "internal-error"
    assert "943" not in response.text
    assert "unexpected error:" not in response.text


# --- no raw path segment, query value or key of the caller's in an error --------------------------


async def test_an_error_names_the_route_template_never_the_raw_path(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.get(
            "/v1/orgs/TS1 7HA/things?q=9434765919", headers=dev_issuer.headers("things:read", aud=AUD)
        )
    body = problem(response, 403)
    assert body["instance"] == "/v1/orgs/{org}/things"
    assert "TS1" not in response.text
    assert "9434765919" not in response.text


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/nowhere/TS1 7HA"), ("DELETE", "/healthz/1985-03-02")]
)
async def test_an_unknown_route_names_no_path(make_app: Any, method: str, path: str) -> None:
    async with app_client(make_app()) as client:
        response = await client.request(method, path)
    body = problem(response, 404)
    assert "instance" not in body
    assert "TS1" not in response.text
    assert "1985" not in response.text


async def test_a_method_not_allowed_names_the_route(make_app: Any) -> None:
    async with app_client(make_app()) as client:
        body = problem(await client.delete("/healthz"), 405)
    assert body["instance"] == "/healthz"


async def test_a_validation_error_names_no_key_of_the_callers(make_app: Any, dev_issuer: Any) -> None:
    async with app_client(make_app()) as client:
        response = await client.post(
            "/v1/widgets",
            json={"name": "w", "count": {"9434765919": 1}},
            headers=dev_issuer.headers("things:write", aud=AUD),
        )
    body = problem(response, 422)
    assert "9434765919" not in response.text
    assert body["instance"] == "/v1/widgets"


def test_validation_errors_drop_input_ctx_and_unexpected_keys() -> None:
    raw = [
        {
            "type": "extra_forbidden",
            "loc": ("body", "TS1 7HA"),
            "msg": "Extra inputs are not permitted",
            "input": "x",
        },
        {"type": "missing", "loc": ("body", "name"), "msg": "Field required", "input": {"TS1 7HA": 1}},
        {
            "type": "int_parsing",
            "loc": ("body", "items", 3, "sw1a 1aa"),
            "msg": "Input should be a valid integer",
            "input": "9434765919",
            "ctx": {"x": "9434765919"},
        },
    ]
    assert validation_errors(raw) == [
        {
            "field": "body",
            "message": "holds a field that is not accepted here; send only the documented fields",
        },
        {"field": "name", "message": "Field required"},
        {"field": "items.3.(a key)", "message": "Input should be a valid integer"},
    ]


async def test_a_body_over_the_limit_names_no_path(make_app: Any, dev_issuer: Any) -> None:
    headers = dev_issuer.headers("things:write", aud=AUD)
    async with app_client(make_app(max_body_bytes=10)) as client:
        response = await client.post("/v1/echo?TS1%207HA", content=b"x" * 100, headers=headers)
    body = problem(response, 413)
    assert "TS1" not in response.text
    assert "/v1/echo" not in body["detail"]
