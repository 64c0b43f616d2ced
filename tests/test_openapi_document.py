"""Every service's OpenAPI document: who may call each operation, every answer it gives as a
problem+json where it is an error, enums and examples that fit their schemas."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs
import pytest

import cef_api.main
import cef_audit.main
import cef_tokeniser.main
from cef_api.config import Settings as ApiSettings
from cef_api.invoices.models import InvoiceStatus
from cef_api.invoices.schemas import InvoiceStatusName
from cef_audit.config import Settings as AuditSettings
from cef_tokeniser.config import Settings as TokeniserSettings
from cef_tokeniser.keys import ensure_dev_master_key

SERVICES = ["tokeniser", "cef-api", "audit"]
PUBLIC = {"/healthz", "/readyz", "/.well-known/jwks.json"}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
JSON_MEDIA = ("application/json", "application/problem+json", "application/fhir+json", "multipart/form-data")


def document(service: str, data_dir: Path) -> dict[str, Any]:
    """The service's document as /openapi.json serves it (building it needs no database)."""
    common: dict[str, Any] = {"data_dir": data_dir, "environment": "test", "dev_issuer_enabled": True}
    url = f"sqlite:///{data_dir}/{service}.db"
    if service == "tokeniser":
        master = data_dir / "keys" / "master.key"
        ensure_dev_master_key(master)
        app = cef_tokeniser.main.create_app(
            TokeniserSettings(**common, database_url=url, master_key_file=master)
        )
    elif service == "cef-api":
        app = cef_api.main.create_app(ApiSettings(**common, database_url=url))
    else:
        app = cef_audit.main.create_app(AuditSettings(**common, database_url=url))
    return json.loads(json.dumps(app.openapi()))


@pytest.fixture(params=SERVICES)
def doc(request: pytest.FixtureRequest, data_dir: Path) -> dict[str, Any]:
    return document(request.param, data_dir)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_says_which_token_and_scopes_it_needs(doc: dict[str, Any]) -> None:
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert "scope" in scheme["description"]
    seen = 0
    for path, method, operation in operations(doc):
        if path in PUBLIC:
            assert operation["security"] == [], path
            continue
        seen += 1
        assert operation["security"], f"{method} {path} documents no security"
        for alternative in operation["security"]:
            assert alternative["bearerAuth"], f"{method} {path} names no scope"
    assert seen >= 3


def test_every_error_is_a_problem_and_every_operation_lists_its_own(doc: dict[str, Any]) -> None:
    for path, method, operation in operations(doc):
        responses = operation["responses"]
        where = f"{method} {path}"
        expected = set()
        if path not in PUBLIC:
            expected |= {"401", "403"}
        if "{" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"413", "422"}
        assert expected <= set(responses), f"{where} lacks {expected - set(responses)}"
        for status, response in responses.items():
            if int(status) < 400 or (path == "/readyz" and status == "503"):
                continue
            content = response["content"]
            assert list(content) == ["application/problem+json"], f"{where} {status}"
            assert content["application/problem+json"]["schema"] == PROBLEM_REF, f"{where} {status}"
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "ValidationError" not in doc["components"]["schemas"]


def test_every_reference_resolves_and_operation_ids_are_handler_names(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    assert "$defs" not in text
    for name in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert name in doc["components"]["schemas"], name
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z_]+", i) for i in ids), ids


def _examples(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [e["value"] for e in media.get("examples", {}).values()]


def _check_examples(doc: dict[str, Any], where: str, content: dict[str, Any]) -> None:
    for media_type, media in content.items():
        examples = _examples(media)
        assert examples, f"{where} {media_type} has no example"
        schema = media.get("schema")
        for example in examples:
            if media_type.startswith(JSON_MEDIA) and schema:
                validator = jsonschema_rs.validator_for({**schema, "components": doc["components"]})
                errors = [e.message for e in validator.iter_errors(example)]
                assert not errors, f"{where} {media_type}: {errors[:3]}"
            else:
                assert isinstance(example, str), f"{where} {media_type}"


def test_every_body_and_answer_has_an_example_that_fits_its_schema(doc: dict[str, Any]) -> None:
    for path, method, operation in operations(doc):
        where = f"{method} {path}"
        if "requestBody" in operation:
            _check_examples(doc, f"{where} body", operation["requestBody"]["content"])
        for status, response in operation["responses"].items():
            if "content" in response:
                _check_examples(doc, f"{where} {status}", response["content"])
            else:
                assert not status.startswith("2"), f"{where} {status} documents no body"


def _parameter(doc: dict[str, Any], path: str, name: str, method: str = "get") -> dict[str, Any]:
    (found,) = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = found["schema"]
    return next(s for s in schema.get("anyOf", [schema]) if s.get("type") != "null")


def test_parameters_with_a_fixed_set_of_values_list_them(data_dir: Path) -> None:
    api = document("cef-api", data_dir)
    statuses = {v for k, v in vars(InvoiceStatus).items() if k.isupper() and isinstance(v, str)}
    assert set(get_args(InvoiceStatusName)) == statuses
    status = _parameter(api, "/v1/invoices", "status")
    assert status["type"] == "array"
    assert set(status["items"]["enum"]) == statuses
    assert _parameter(api, "/v1/invoices/{invoice_id}/lines", "outcome")["enum"] == [
        "valid",
        "query",
        "rejected",
    ]
    audit = document("audit", data_dir)
    assert set(_parameter(audit, "/v1/events", "outcome")["items"]["enum"]) == {
        "success",
        "failure",
        "denied",
    }
    assert "read" in _parameter(audit, "/v1/events", "action")["items"]["enum"]
    assert set(_parameter(audit, "/v1/events/export", "format")["enum"]) == {"jsonl", "csv", "fhir"}


def test_a_body_read_by_hand_is_documented(data_dir: Path) -> None:
    api = document("cef-api", data_dir)
    submit = api["paths"]["/v1/invoices"]["post"]
    form = submit["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["invoice", "backing_data"]
    assert form["schema"]["properties"]["invoice"] == {"$ref": "#/components/schemas/InvoiceHeaderIn"}
    assert form["schema"]["properties"]["backing_data"]["format"] == "binary"
    assert {"201", "202", "409", "503"} <= set(submit["responses"])
    lines = api["paths"]["/v1/invoices/{invoice_id}/lines"]["get"]["responses"]["200"]
    assert lines["content"]["application/json"]["schema"]["anyOf"] == [
        {"$ref": "#/components/schemas/LinePage"},
        {"$ref": "#/components/schemas/LineDetailPage"},
    ]
    tokeniser = document("tokeniser", data_dir)
    assert tokeniser["paths"]["/v1/detokenise"]["post"]["security"] == [{"bearerAuth": ["detokenise"]}]


def _example_values(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("example", "examples"):
                yield value
            else:
                yield from _example_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _example_values(value)


def test_no_example_shows_an_nhs_number_outside_the_range_reserved_for_tests(doc: dict[str, Any]) -> None:
    examples = json.dumps(list(_example_values(doc)))
    assert len(examples) > 1000  # the search reaches the examples
    for number in re.findall(r"(?<!\d)\d{3} ?\d{3} ?\d{4}(?!\d)", examples):
        assert number.replace(" ", "").startswith("999"), number
