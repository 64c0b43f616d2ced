"""The CEF API killed with `kill -9` in the middle of a 200,000-line background validation, over
real processes on real ports (tests/fault_stack.py): the restart fails the invoice saying to
resubmit, and the resubmission ends exactly as an uninterrupted run of the file would."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fault_stack import (  # noqa: E402
    alive,
    big_invoice,
    expected_counts,
    finished,
    generate_world,
    running_stack,
    summary_counts,
    wait_for,
    write_reference,
)

pytestmark = pytest.mark.e2e


def test_cef_api_killed_mid_validation_fails_the_invoice_and_the_resubmission_is_exact(
    tmp_path: Path,
) -> None:
    """kill -9 of the CEF API during a 200,000-line background validation. On restart the invoice
    is failed, saying to resubmit, with no line kept; the resubmission (same number, same key) is
    accepted, and its outcomes are those of an uninterrupted run of the file: no line of the broken
    run counts as an earlier line for duplicates."""
    world = generate_world.generate(seed=55, patients=400, invoices=0)
    header, backing, expected = big_invoice(world, 200_000, seed=56)
    reference = write_reference(world, tmp_path / "world")
    provider = header["provider_code"]
    # Batches of 10,000 lines show progress early; worker processes, as a large invoice has them.
    env = {"cef-api": {"CEF_API_VALIDATION_BATCH_LINES": "10000", "CEF_API_VALIDATION_PROCESSES": "2"}}
    with running_stack(tmp_path, reference_dir=reference, env=env) as stack:
        r = stack.submit(header, backing, key="big-1")
        assert r.status_code == 202, r.text
        first = r.json()["id"]
        progress = wait_for(
            lambda: (b := stack.invoice(first, provider))["lines_done"] > 0 and b,
            "validation to start",
            300,
            0.05,
        )
        workers = stack["cef-api"].children()
        assert workers  # the validation worker processes
        stack["cef-api"].kill(group=False)
        # Nobody ends the worker processes: they see their parent go, and exit.
        wait_for(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to exit", 60)
        assert progress["status"] == "validating"

        stack["cef-api"].start()
        stack["cef-api"].wait_ready()
        broken = stack.invoice(first, provider)
        assert broken["status"] == "failed", broken
        assert "submit the invoice again" in broken["failure_reason"]
        assert broken["lines_done"] == 0
        assert broken["summary"]["lines"] == 0
        lines = httpx.get(
            f"{stack.url('cef-api')}/v1/invoices/{first}/lines",
            headers=stack.headers("invoices:submit", org=provider),
            timeout=30,
        )
        assert lines.status_code == 200
        assert lines.json()["items"] == []

        r = stack.submit(header, backing, key="big-1")
        assert r.status_code == 202, r.text
        assert "Idempotent-Replayed" not in r.headers
        second = r.json()["id"]
        assert second != first
        done = wait_for(lambda: finished(stack, second, provider), "the resubmission's validation", 600, 0.5)
        assert done["status"] == "validated"
        assert summary_counts(done) == expected_counts(expected)

        # Line by line where duplicates show: the rejected lines and their reasons.
        staff = stack.headers("invoices:validate", org=header["commissioner_code"])
        got: dict[str, list[str]] = {}
        cursor = None
        while True:
            params: dict[str, Any] = {"outcome": "rejected", "limit": 5000}
            if cursor:
                params["cursor"] = cursor
            page = httpx.get(
                f"{stack.url('cef-api')}/v1/invoices/{second}/lines", params=params, headers=staff, timeout=60
            ).json()
            got.update((x["line_ref"], sorted(x["reasons"])) for x in page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        want = {x.line_ref: sorted(x.reasons) for x in expected if x.outcome == "rejected"}
        assert got == want
