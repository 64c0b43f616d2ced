"""Observability over real processes: each service's /metrics (on its own port, never the public
one) scraped before and after a demo invoice, the counters checked to move; and one trace id
followed from a request to the CEF API through the tokeniser to the audit service, in each
service's own log."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))

from fault_stack import Stack, finished, running_stack, wait_for  # noqa: E402

from cef_common.testing import free_port  # noqa: E402

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
INVOICE = "RTR-201904-0000"
PREFIXES = {"audit": "CEF_AUDIT_", "tokeniser": "CEF_TOKENISER_", "cef-api": "CEF_API_"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def drained(samples: Samples) -> bool:
    """The producer's outbox read and found empty. A scrape whose database read failed leaves the
    gauge out, which must not pass for an empty outbox."""
    pending = [v for (n, _), v in samples.items() if n == "cef_audit_outbox_pending"]
    return bool(pending) and sum(pending) == 0


def log_lines(stack: Stack, service: str) -> list[dict[str, Any]]:
    lines = []
    for line in stack[service].log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def traced(stack: Stack, service: str, trace_id: str) -> list[dict[str, Any]]:
    return [x for x in log_lines(stack, service) if x.get("trace_id") == trace_id]


def test_metrics_move_and_one_trace_crosses_three_services(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PREFIXES}
    env = {name: {f"{prefix}METRICS_PORT": str(ports[name])} for name, prefix in PREFIXES.items()}
    # Checkpoints every second, so the checkpoint's age is there to read.
    env["audit"]["CEF_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] = "1"
    with running_stack(tmp_path, reference_dir=DEMO / "reference", env=env) as stack:
        # Metrics are on their own ports only.
        for name in PREFIXES:
            assert httpx.get(f"{stack.url(name)}/metrics", timeout=10).status_code == 404

        # Whatever start-up recorded (reference data loaded) reaches audit first.
        for name in ("cef-api", "tokeniser"):
            wait_for(lambda name=name: drained(scrape(ports[name])), f"{name}'s outbox to drain")
        before = {name: scrape(port) for name, port in ports.items()}
        chain_before = total(before["audit"], "cef_audit_chain_length")
        assert chain_before > 0, "start-up's events are in the chain"

        submit_trace = secrets.token_hex(16)
        header = json.loads((DEMO / "invoices" / f"{INVOICE}.json").read_text())
        r = httpx.post(
            f"{stack.url('cef-api')}/v1/invoices",
            files={
                "invoice": ("i.json", json.dumps(header).encode(), "application/json"),
                "backing_data": ("b.csv", (DEMO / "invoices" / f"{INVOICE}.csv").read_bytes(), "text/csv"),
            },
            headers={
                **stack.headers("invoices:submit", org="RTR"),
                "traceparent": f"00-{submit_trace}-{secrets.token_hex(8)}-01",
            },
            timeout=120,
        )
        assert r.status_code in (201, 202), r.text
        assert r.headers["traceparent"].split("-")[1] == submit_trace
        invoice = wait_for(lambda: finished(stack, r.json()["id"], "RTR"), "the invoice's validation")
        assert invoice["status"] == "validated", invoice
        lines = invoice["summary"]["lines"]
        assert lines > 0

        def settled() -> dict[str, Samples] | None:
            now = {name: scrape(port) for name, port in ports.items()}
            producers_drained = all(drained(now[name]) for name in ("cef-api", "tokeniser"))
            # Drained means delivered, so the chain has grown by what the submission recorded.
            chain_grew = total(now["audit"], "cef_audit_chain_length") > chain_before
            return now if producers_drained and chain_grew else None

        after = wait_for(settled, "the outboxes to drain into the audit chain")

        api_before, api_after = before["cef-api"], after["cef-api"]
        submitted = total(api_after, "cef_http_requests_total", method="POST", route="/v1/invoices") - total(
            api_before, "cef_http_requests_total", method="POST", route="/v1/invoices"
        )
        assert submitted == 1
        assert total(api_after, "cef_http_request_duration_seconds_count", route="/v1/invoices") >= 1
        validated = total(api_after, "cef_lines_validated_total") - total(
            api_before, "cef_lines_validated_total"
        )
        assert validated == lines
        assert total(api_after, "cef_invoices", status="validated") == 1
        assert total(api_after, "cef_validation_jobs", state="queued") == 0
        assert total(api_after, "cef_validation_jobs", state="running") == 0
        assert total(api_after, "cef_validation_jobs", state="failed") == 0
        assert total(after["tokeniser"], "cef_http_requests_total", route="/v1/tokenise") > total(
            before["tokeniser"], "cef_http_requests_total", route="/v1/tokenise"
        )
        # The audit chain grew by what the producers delivered (awaited above), and is checkpointed.
        assert total(after["audit"], "cef_http_requests_total", method="POST", route="/v1/events") > total(
            before["audit"], "cef_http_requests_total", method="POST", route="/v1/events"
        )
        checkpoint_age = wait_for(
            lambda: [
                v
                for (n, _), v in scrape(ports["audit"]).items()
                if n == "cef_audit_last_checkpoint_age_seconds"
            ],
            "a checkpoint",
        )
        assert 0 <= checkpoint_age[0] < 60

        # One trace: CEF staff re-identify a line's patient at the CEF API, which asks the tokeniser,
        # and both record audit events that the audit service stores.
        staff = stack.headers("invoices:validate", org="00C")
        page = httpx.get(
            f"{stack.url('cef-api')}/v1/invoices/{invoice['id']}/lines",
            params={"limit": 500},
            headers=staff,
            timeout=30,
        ).json()
        line = next(x for x in page["items"] if x["patient_token"])
        reidentified_before = total(scrape(ports["tokeniser"]), "cef_reidentifications_total")
        trace_id = secrets.token_hex(16)
        r = httpx.post(
            f"{stack.url('cef-api')}/v1/invoices/{invoice['id']}/lines/{line['line_ref']}/reidentify",
            json={"purpose": "resolve-query", "reason": "Checking the registration behind this line."},
            headers={**staff, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.headers["traceparent"].split("-")[1] == trace_id

        # The access line is written once the answer is sent: waited for, like the others.
        wait_for(
            lambda: [
                x
                for x in traced(stack, "cef-api", trace_id)
                if x.get("event") == "request" and x.get("path", "").endswith("/reidentify")
            ],
            "the trace in the CEF API's log",
        )
        tokeniser_lines = wait_for(
            lambda: [x for x in traced(stack, "tokeniser", trace_id) if x.get("path") == "/v1/detokenise"],
            "the trace in the tokeniser's log",
        )
        assert tokeniser_lines[0]["status"] == 200
        audit_lines = wait_for(
            lambda: [x for x in traced(stack, "audit", trace_id) if x.get("path") == "/v1/events"],
            "the trace in the audit service's log",
        )
        assert audit_lines[0]["method"] == "POST"
        # The re-identification is counted where it happens.
        assert total(scrape(ports["tokeniser"]), "cef_reidentifications_total") > reidentified_before
        # The request lines of the trace name routes by their templates, never the line reference
        # (a caller's path segment).
        paths = {
            x["path"]
            for name in PREFIXES
            for x in traced(stack, name, trace_id)
            if x.get("event") == "request"
        }
        assert paths == {
            "/v1/invoices/{invoice_id}/lines/{line_ref}/reidentify",
            "/v1/detokenise",
            "/v1/events",
        }
