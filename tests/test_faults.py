"""Faults over real processes: the tokeniser killed, the CEF API killed mid-validation, a burst of
concurrent and repeated submissions, and uploads that stall. Each service runs as its own process
on a real port (tests/fault_stack.py), so one can be killed and restarted without the others."""

from __future__ import annotations

import json
import socket
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fault_stack import (  # noqa: E402
    big_invoice,
    expected_counts,
    finished,
    generate_world,
    running_stack,
    small_world,
    summary_counts,
    wait_for,
    write_reference,
)

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


def test_tokeniser_killed_submission_is_refused_whole_and_the_retry_succeeds(tmp_path: Path) -> None:
    world = small_world(seed=21)
    inv = world.invoices[0]
    # Addressed to another commissioner, so that the small invoice is no earlier activity of it.
    big_header, big_backing, big_expected = big_invoice(
        world, 1000, seed=5, not_commissioner=inv.header["commissioner_code"]
    )
    reference = write_reference(world, tmp_path / "world")
    provider = inv.header["provider_code"]
    # The small invoice is validated in the request, the 1,000-line one in the background.
    assert len(inv.backing) < 20_000 < len(big_backing)
    env = {"cef-api": {"CEF_API_ASYNC_THRESHOLD_BYTES": "20000", "CEF_API_HTTP_RETRIES": "1"}}
    with running_stack(tmp_path, reference_dir=reference, env=env) as stack:
        stack["tokeniser"].kill()

        # In the request: a 503 saying what happened and what to do, and nothing stored.
        r = stack.submit(inv.header, inv.backing, key="tok-1")
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        problem = r.json()
        assert problem["code"] == "tokeniser-unavailable"
        assert "tokeniser is unavailable" in problem["detail"]
        assert "nothing of this invoice was stored" in problem["detail"]
        assert "submit it again" in problem["detail"]
        assert stack.invoices(provider) == []

        # In the background: the invoice fails saying so, holding neither its number nor its key.
        r = stack.submit(big_header, big_backing, key="tok-big")
        assert r.status_code == 202, r.text
        broken = wait_for(lambda: finished(stack, r.json()["id"], big_header["provider_code"]), "the failure")
        assert broken["status"] == "failed"
        assert "tokeniser" in broken["failure_reason"]
        assert "submit it again" in broken["failure_reason"]

        stack["tokeniser"].start()
        stack["tokeniser"].wait_ready()

        retry = stack.submit(inv.header, inv.backing, key="tok-1")
        assert retry.status_code == 201, retry.text
        assert "Idempotent-Replayed" not in retry.headers
        assert retry.json()["status"] == "validated"
        expected = generate_world.summary_of(inv)
        assert summary_counts(retry.json()) == tuple(
            int(expected[k]) for k in ("lines", "valid", "query", "rejected")
        )

        big_retry = stack.submit(big_header, big_backing, key="tok-big")
        assert big_retry.status_code == 202, big_retry.text
        assert big_retry.json()["id"] != broken["id"]
        done = wait_for(
            lambda: finished(stack, big_retry.json()["id"], big_header["provider_code"]), "validation"
        )
        assert done["status"] == "validated"
        assert summary_counts(done) == expected_counts(big_expected)

        # The key now stands for the invoice that was stored: a further retry replays it.
        again = stack.submit(inv.header, inv.backing, key="tok-1")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == retry.json()["id"]
        numbers = Counter((i["invoice_number"], i["status"]) for i in stack.invoices(provider))
        assert numbers[(inv.header["invoice_number"], "validated")] == 1
        assert sum(n for (number, _), n in numbers.items() if number == inv.header["invoice_number"]) == 1


def test_concurrent_submissions_retries_and_duplicate_numbers(tmp_path: Path) -> None:
    """50 submissions at once: 10 invoices each sent three times with one Idempotency-Key, and 10
    numbers each sent twice with different keys. One invoice per number is stored; a key's
    retries get that invoice; the other key of a number gets 409."""
    world = small_world(seed=33, invoices=1, lines=10)
    reference = write_reference(world, tmp_path / "world")
    base = world.invoices[0]
    provider = base.header["provider_code"]
    requests: list[tuple[str, str, str]] = []  # (group, invoice number, key)
    for i in range(10):
        requests += [(f"retry-{i}", f"CC-R{i:02d}", f"key-r{i}")] * 3
    for i in range(10):
        requests += [(f"dup-{i}", f"CC-D{i:02d}", f"key-d{i}-{side}") for side in ("a", "b")]
    assert len(requests) == 50

    with running_stack(tmp_path, reference_dir=reference) as stack:
        headers = stack.headers("invoices:submit", org=provider)

        def send(request: tuple[str, str, str]) -> tuple[str, httpx.Response]:
            group, number, key = request
            header = {**base.header, "invoice_number": number}
            r = httpx.post(
                f"{stack.url('cef-api')}/v1/invoices",
                files={
                    "invoice": ("invoice.json", json.dumps(header).encode(), "application/json"),
                    "backing_data": ("backing.csv", base.backing, "text/csv"),
                },
                headers={**headers, "Idempotency-Key": key},
                timeout=180,
            )
            return group, r

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(send, requests))

        by_group: dict[str, list[httpx.Response]] = {}
        for group, r in answers:
            by_group.setdefault(group, []).append(r)
        for group, responses in by_group.items():
            statuses = sorted(r.status_code for r in responses)
            if group.startswith("retry-"):
                assert set(statuses) <= {201, 202}, [r.text for r in responses]
                assert len({r.json()["id"] for r in responses}) == 1, group
                replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
                assert Counter(replayed) == Counter({"true": 2, None: 1}), (group, replayed)
            else:
                assert statuses[0] in (201, 202), (group, [r.text for r in responses])
                assert statuses[1] == 409, (group, [r.text for r in responses])
                conflict = next(r for r in responses if r.status_code == 409)
                assert conflict.headers["content-type"].startswith(PROBLEM)
                assert conflict.json()["code"] == "duplicate-invoice"

        stored = stack.invoices(provider)
        numbers = Counter(i["invoice_number"] for i in stored)
        assert numbers == Counter({number: 1 for _, number, _ in requests})
        for item in stored:
            done = wait_for(lambda item=item: finished(stack, item["id"], provider), "validation")
            assert done["status"] == "validated"


def _raw_stalled_request(url: str, path: str, head: dict[str, str], sent: bytes, declared: int) -> bytes:
    """Sends the headers and the first `sent` bytes of a body declared `declared` bytes long, then
    nothing more; returns what the server answers (it must close the connection)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {declared}"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + sent)
        answer = b""
        while chunk := sock.recv(65536):  # a bound, not an assertion: the socket's own timeout
            answer += chunk
    return answer


def _parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    headers = {k.lower(): v for k, v in headers.items()}
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def test_a_stalled_upload_is_cut_off_with_408_and_nothing_is_kept(tmp_path: Path) -> None:
    world = small_world(seed=44, invoices=1, lines=10)
    reference = write_reference(world, tmp_path / "world")
    inv = world.invoices[0]
    provider = inv.header["provider_code"]
    env = {
        "cef-api": {"CEF_API_UPLOAD_IDLE_TIMEOUT_SECONDS": "1"},
        "tokeniser": {"CEF_TOKENISER_UPLOAD_IDLE_TIMEOUT_SECONDS": "1"},
    }
    with running_stack(tmp_path, reference_dir=reference, env=env) as stack:
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="invoice"\r\n\r\n'
            f"{json.dumps(inv.header)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="backing_data"; filename="b.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode() + inv.backing[: len(inv.backing) // 2]
        answer = _raw_stalled_request(
            stack.url("cef-api"),
            "/v1/invoices",
            {
                "Authorization": f"Bearer {stack.token('invoices:submit', 'cef-api', provider)}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Idempotency-Key": "stalled-1",
            },
            body,
            declared=len(body) + 100_000,
        )
        status, headers, problem = _parse(answer)
        assert status == 408, answer[:500]
        assert headers["content-type"].startswith(PROBLEM)
        assert problem["code"] == "request-timeout"
        assert "nothing of it was kept" in problem["detail"]
        assert stack.invoices(provider) == []
        assert list((stack.data_dir / "spool").iterdir()) == []

        # Other large-body routes share the limit: the tokeniser's batch endpoint.
        partial = b'{"kind": "nhs_number", "values": ["943476'
        answer = _raw_stalled_request(
            stack.url("tokeniser"),
            "/v1/tokenise",
            {
                "Authorization": f"Bearer {stack.token('tokenise', 'tokeniser')}",
                "Content-Type": "application/json",
            },
            partial,
            declared=len(partial) + 1000,
        )
        status, headers, problem = _parse(answer)
        assert status == 408, answer[:500]
        assert problem["code"] == "request-timeout"

        # The same upload, sent whole, with the same key: stored once.
        r = stack.submit(inv.header, inv.backing, key="stalled-1")
        assert r.status_code == 201, r.text
        assert "Idempotent-Replayed" not in r.headers
