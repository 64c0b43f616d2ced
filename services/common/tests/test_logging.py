"""Logging: JSON lines through one pipeline (uvicorn's too), request ids, identifiers masked."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from cef_common.context import accept_request_id, new_request_id, request_id_is_safe
from cef_common.logging import MASK, configure_logging, mask_value, render_exception
from cef_common.testing import app_client, free_port

NHS = "9434765919"


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NHS, MASK),
        ("943 476 5919", MASK),
        ("943-476-5919", MASK),
        (f"patient {NHS} seen", f"patient {MASK} seen"),
        (9434765919, MASK),
        ({"a": {"b": [NHS, 9434765919]}}, {"a": {"b": [MASK, MASK]}}),
        ((NHS,), (MASK,)),
        ("12345678901", "12345678901"),  # eleven digits: not an NHS number's shape
        ("RTR-2026-000123", "RTR-2026-000123"),
        (123456789, 123456789),
        (True, True),
        (12.5, 12.5),
    ],
)
def test_mask_value(value: Any, expected: Any) -> None:
    assert mask_value(value) == expected


def test_structlog_events_are_masked_in_event_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", service="masking")
    structlog.get_logger("t").info(
        f"found {NHS}", nested={"deep": {"nhs": "943 476 5919"}}, number=9434765919
    )
    logging.getLogger("plain.stdlib").warning("stdlib says %s", NHS)
    out = capsys.readouterr().err
    assert NHS not in out
    assert "943 476 5919" not in out
    first, second = json_lines(out)
    assert first["event"] == f"found {MASK}"
    assert first["nested"] == {"deep": {"nhs": MASK}}
    assert first["number"] == MASK
    assert first["service"] == "masking"
    assert second["event"] == f"stdlib says {MASK}"
    assert second["logger"] == "plain.stdlib"


def test_exceptions_are_logged_without_their_messages(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json")
    # Built at run time: source lines appear in the frames, data must not.
    postcode, dob = " ".join(["SW1A", "1AA"]), "-".join(["1985", "03", "02"])
    try:
        try:
            raise KeyError(postcode)
        except KeyError as inner:
            raise ValueError(f"date of birth {dob} is not valid") from inner
    except ValueError:
        structlog.get_logger("t").exception("failed")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    out = capsys.readouterr().err
    assert "1985-03-02" not in out
    assert "SW1A" not in out
    for line in json_lines(out):
        assert "ValueError (message withheld)" in line["exception"]
        assert "KeyError (message withheld)" in line["exception"]
        assert "test_logging.py" in line["exception"]


def test_render_exception_names_types_and_frames() -> None:
    try:
        raise RuntimeError(NHS)
    except RuntimeError as exc:
        text = render_exception(exc)
    assert "builtins.RuntimeError" in text
    assert "test_render_exception_names_types_and_frames" in text
    assert NHS not in text


async def test_request_ids_in_lines_and_the_response(
    make_app: Any, dev_issuer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()
    async with app_client(app) as client:
        capsys.readouterr()
        response = await client.get(
            "/v1/log",
            headers={**dev_issuer.headers("things:read", aud="common-test"), "X-Request-ID": "req-42.a_b"},
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "req-42.a_b"
    lines = json_lines(capsys.readouterr().err)
    route_line = next(line for line in lines if line["logger"] == "cef.test")
    access_line = next(line for line in lines if line["event"] == "request")
    assert route_line["request_id"] == access_line["request_id"] == "req-42.a_b"
    assert route_line["event"] == f"looked up {MASK}"
    assert route_line["patient"] == {"nhs_number": MASK, "ids": [MASK]}
    assert route_line["raw"] == MASK
    assert route_line["caller"] == "tester"
    assert access_line["status"] == 200
    assert access_line["path"] == "/v1/log"
    assert "duration_ms" in access_line


async def test_a_generated_request_id_is_echoed(make_app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    async with app_client(make_app()) as client:
        capsys.readouterr()
        response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    rid = response.headers["x-request-id"]
    assert rid != "bad id\twith spaces"
    assert len(rid) == 32
    err = capsys.readouterr().err
    assert "bad id" not in err
    access = [line for line in json_lines(err) if line["event"] == "request" and line["path"] == "/healthz"]
    assert [line["request_id"] for line in access] == [rid]


def test_uvicorn_logs_go_through_structlog(tmp_path: Path, sqlite_url: str, dev_issuer: Any) -> None:
    """The production path: `uvicorn --factory` configures its own logging first; the service's
    logging then takes over, so every line on stderr is one JSON object, uvicorn's included."""
    port = free_port()
    env = {
        **os.environ,
        "CEF_COMMONTEST_DATA_DIR": str(dev_issuer.keys_dir.parent),
        "CEF_COMMONTEST_DATABASE_URL": sqlite_url,
        "CEF_COMMONTEST_DEV_ISSUER_ENABLED": "true",
        "CEF_COMMONTEST_ENVIRONMENT": "test",
        "CEF_COMMONTEST_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "server.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "factory_app:create_app",
        "--app-dir",
        str(Path(__file__).parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            response = httpx.get(
                f"http://127.0.0.1:{port}/v1/log?q={NHS}",
                headers={
                    **dev_issuer.headers("things:read", aud="common-test"),
                    "X-Request-ID": "from-uvicorn",
                },
            )
            assert response.status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=20)
    text = log_path.read_text()
    assert NHS not in text
    lines = json_lines(text)  # fails on any line not rendered by structlog
    uvicorn_lines = [line for line in lines if line.get("logger", "").startswith("uvicorn")]
    assert any("Application startup complete" in line["event"] for line in uvicorn_lines), text
    assert all("timestamp" in line and "level" in line for line in lines)
    # uvicorn's own access lines (with query strings) are off; the service's line has no query.
    assert not any(line.get("logger") == "uvicorn.access" for line in lines)
    access = [
        line for line in lines if line["event"] == "request" and line.get("request_id") == "from-uvicorn"
    ]
    assert access
    assert access[0]["path"] == "/v1/log"


# --- what the mask covers, and what it leaves alone ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Dates of birth standing alone, in the spellings people type.
        ("born 1985-03-02", f"born {MASK}"),
        ("born 02/03/1985", f"born {MASK}"),
        ("born 2-3-1985", f"born {MASK}"),
        # Full postcodes in any case, with or without the space.
        ("lives at SW1A 1AA", f"lives at {MASK}"),
        ("ts17ha", MASK),
        ("TS18 1HU and E1 6AN", f"{MASK} and {MASK}"),
        # Timestamps, ids, codes and amounts pass unbroken.
        ("2026-12-03T08:41:26.123456Z", "2026-12-03T08:41:26.123456Z"),
        ("2026-12-03 08:41:26", "2026-12-03 08:41:26"),
        ("RTR-201904-0000", "RTR-201904-0000"),
        ("A81001", "A81001"),
        ("DD73C", "DD73C"),
        ("TS18", "TS18"),
        ("1234.50", "1234.50"),
        # An NHS number's shape inside a longer run of letters and digits is not masked: a request
        # id, a hash or a token holding ten digits in a row must pass whole.
        ("aae4b6a9434765919f7579c2", "aae4b6a9434765919f7579c2"),
        ("sha-0123456789abcdef", "sha-0123456789abcdef"),
        ("943-476 5919", "943-476 5919"),  # mixed separators: not the 3-3-4 spelling
    ],
)
def test_mask_shapes(value: str, expected: str) -> None:
    assert mask_value(value) == expected


def test_the_timestamp_of_a_line_is_never_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", service="masking")
    structlog.get_logger("t").info("event", on="1985-03-02")
    line = json_lines(capsys.readouterr().err)[-1]
    assert line["on"] == MASK
    assert line["timestamp"].startswith("20")
    assert MASK not in line["timestamp"]


@pytest.mark.parametrize(
    "rid",
    [
        "9434765919",
        "req-9434765919-x",
        "abc9434765919def",  # inside a run: the mask would not see it, so the id is refused
        "943-476-5919",
        "9.4.3.4.7.6.5.9.1.9",
        "req-1985-03-02",
        "19850302",
        "02-03-1985",
        "sw1a1aa",
        "req-TS18.1HU",
        "TS18-1HU",
    ],
)
def test_a_request_id_that_could_carry_an_identifier_is_replaced(rid: str) -> None:
    accepted = accept_request_id(rid)
    assert accepted != rid
    assert mask_value(accepted) == accepted


@pytest.mark.parametrize(
    "rid", ["req-42.a_b", "from-uvicorn", "3f2a9c1e-5b7d-4e8f-9a0b-c1d2e3f4a5b6", "batch-2026.7", "abc123"]
)
def test_an_ordinary_request_id_is_kept(rid: str) -> None:
    assert accept_request_id(rid) == rid


def test_generated_request_ids_pass_the_mask_unbroken() -> None:
    # About one random hex id in ten holds ten digits in a row: enough draws to meet several.
    for _ in range(2000):
        rid = new_request_id()
        assert request_id_is_safe(rid)
        assert mask_value(rid) == rid
        assert accept_request_id(rid) == rid


async def test_an_identifier_in_the_request_id_header_is_not_echoed_or_logged(
    make_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async with app_client(make_app()) as client:
        capsys.readouterr()
        response = await client.get("/healthz", headers={"X-Request-ID": "req-943-476-5919"})
    rid = response.headers["x-request-id"]
    assert "943-476-5919" not in rid
    err = capsys.readouterr().err
    assert "943-476-5919" not in err
    assert MASK not in err
    access = [line for line in json_lines(err) if line["event"] == "request"]
    assert [line["request_id"] for line in access] == [rid]


async def test_access_lines_name_the_route_never_the_path_or_query(
    make_app: Any, dev_issuer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async with app_client(make_app()) as client:
        capsys.readouterr()
        await client.get(
            "/v1/orgs/TS1 7HA/things?q=SW1A%201AA",
            headers=dev_issuer.headers("things:read", aud="common-test"),
        )
        await client.get("/v1/nowhere/9434765919")
    err = capsys.readouterr().err
    assert "TS1 7HA" not in err
    assert "TS1%207HA" not in err
    assert "SW1A" not in err
    assert "9434765919" not in err
    routed, unmatched = [line for line in json_lines(err) if line["event"] == "request"]
    assert routed["path"] == "/v1/orgs/{org}/things"
    assert "path_digest" not in routed
    assert unmatched["path"] == "(no route)"
    assert set(unmatched["path_digest"]) == {"digest", "length"}
