"""Request parameters: the cursors a service issued (a 400 naming the parameter for anything else),
and no NUL character anywhere in a URL."""

from __future__ import annotations

from typing import Any

import pytest

from cef_common.errors import BadRequest
from cef_common.params import MAX_BIGINT, MAX_INTEGER, decimal_cursor
from cef_common.testing import app_client


@pytest.mark.parametrize(("raw", "position"), [(None, None), ("", None), ("0", 0), ("42", 42)])
def test_issued_cursors_read_back(raw: str | None, position: int | None) -> None:
    assert decimal_cursor(raw) == position


def test_the_largest_integer_of_the_column_is_a_cursor() -> None:
    assert decimal_cursor(str(MAX_BIGINT)) == MAX_BIGINT
    assert decimal_cursor(str(MAX_INTEGER), maximum=MAX_INTEGER) == MAX_INTEGER
    with pytest.raises(BadRequest):
        decimal_cursor(str(MAX_INTEGER + 1), maximum=MAX_INTEGER)


@pytest.mark.parametrize(
    "raw", ["\u00b9", "\u0663", "1\u00b2", str(MAX_BIGINT + 1), "9" * 30, "-1", "+1", " 1", "1e3", "abc"]
)
def test_anything_else_is_a_400_naming_the_parameter(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decimal_cursor(raw, name="after")
    assert caught.value.code == "bad-cursor"
    assert caught.value.detail.startswith("after ")
    assert caught.value.extra["errors"][0]["field"] == "after"


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/orgs/R%00X/things", "org"),
        ("/v1/widgets?name=a%00b", "name"),
        ("/v1/widgets?a%00b=1", "(a key)"),
    ],
)
async def test_a_nul_character_in_the_url_is_422_naming_the_parameter(
    make_app: Any, dev_issuer: Any, url: str, field: str
) -> None:
    headers = dev_issuer.headers("things:read", org="RX1", aud="common-test")
    async with app_client(make_app()) as client:
        r = await client.get(url, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "nul-character"
    assert r.json()["errors"][0]["field"] == field
    assert "\\u0000" not in r.text


@pytest.mark.parametrize("declared", ["\u00b9", "9" * 40])
async def test_a_content_length_not_in_ascii_digits_is_no_server_error(
    make_app: Any, dev_issuer: Any, declared: str
) -> None:
    # As bytes: a header is latin-1 on the wire, where '¹' is one byte.
    headers = {
        **dev_issuer.headers("things:write", aud="common-test"),
        "content-length": declared.encode("latin-1"),
    }
    async with app_client(make_app()) as client:
        r = await client.post("/v1/echo", content=b"{}", headers=headers)
    assert r.status_code < 500, r.text
