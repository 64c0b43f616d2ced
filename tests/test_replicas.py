"""Replicas on one PostgreSQL: two CEF API processes and two `cef worker` nodes (the APIs run no
worker of their own), over real processes on real ports (tests/fault_stack.py).

- The shared sample's submissions, spread over both APIs and all validated by the queue, end with
  exactly the expected outcomes (submission order decides "earlier" across every node).
- `kill -9` of the worker running a large invoice: the other worker finds the job stalled,
  restarts it from nothing, and the invoice ends with the outcomes of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from fault_stack import (  # noqa: E402
    Service,
    Stack,
    big_invoice,
    expected_counts,
    finished,
    free_port,
    generate_world,
    running_stack,
    summary_counts,
    wait_for,
    write_reference,
)
from test_sample_replay import EPRACCUR, FILES, SAMPLE, _multipart, assert_sample_outcomes  # noqa: E402

from cef_common import db  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# Every submission goes to the queue; the APIs only defer; crashes are noticed within seconds.
QUEUE_ENV = {
    "CEF_API_ASYNC_THRESHOLD_BYTES": "0",
    "CEF_API_QUEUE_EMBEDDED_WORKER": "false",
    "CEF_API_QUEUE_HEARTBEAT_SECONDS": "1",
    "CEF_API_QUEUE_STALLED_SECONDS": "4",
    "CEF_API_QUEUE_RECOVERY_INTERVAL_SECONDS": "1",
    "CEF_API_QUEUE_ORDER_RETRY_SECONDS": "0",
    # Two APIs and two workers on one host: no fixed metrics port to fight over.
    "CEF_API_METRICS_PORT": "0",
}


def _databases(database_factory: Any) -> dict[str, str]:
    from cef_api.main import MIGRATIONS as API
    from cef_audit.main import MIGRATIONS as AUDIT
    from cef_tokeniser.main import MIGRATIONS as TOKENISER

    return {
        "cef-api": database_factory("postgresql", API),
        "tokeniser": database_factory("postgresql", TOKENISER),
        "audit": database_factory("postgresql", AUDIT),
    }


@dataclasses.dataclass
class Worker:
    """A `cef worker` process in a session of its own."""

    env: dict[str, str]
    log: Path
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-c", "from cef_cli.main import app; app()", "worker", "--name", self.log.stem]
        # The same data directory as the APIs: the same development keys (signing and queue KEK).
        cmd += ["--data-dir", str(self.data_dir)]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                cmd, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


@contextmanager
def replicas(
    tmp: Path, database_factory: Any, reference: Path, env: dict[str, str]
) -> Iterator[tuple[Stack, list[Service], list[Worker]]]:
    urls = _databases(database_factory)
    with running_stack(tmp, reference_dir=reference, env={"cef-api": env}, database_urls=urls) as stack:
        first = stack["cef-api"]
        second_run = dataclasses.replace(
            first.run, settings=first.run.settings.model_copy(update={"port": free_port()})
        )
        second_env = {**first.env, "CEF_API_PORT": str(second_run.settings.port)}
        second_env.pop("CEF_API_SEED_REFERENCE_DIR", None)
        second = Service(second_run, second_env, tmp / "cef-api-2.log")
        second.start()
        workers = [Worker(dict(first.env), tmp / f"worker-{n}.log", stack.data_dir) for n in range(2)]
        try:
            second.wait_ready()
            for worker in workers:
                worker.start()
            yield stack, [first, second], workers
        finally:
            for worker in workers:
                worker.stop()
            second.stop()


def _headers(stack: Stack, scope: str, org: str | None = None) -> dict[str, str]:
    return stack.headers(scope, org=org)


def test_the_sample_spread_over_two_apis_and_two_workers_ends_as_expected(
    tmp_path: Path, database_factory: Any
) -> None:
    if not (SAMPLE / "expected").is_dir() or not EPRACCUR.is_file():
        pytest.skip("no sample world")
    empty = tmp_path / "no-reference"
    empty.mkdir()
    with replicas(tmp_path, database_factory, empty, QUEUE_ENV) as (stack, apis, workers):
        admin = _headers(stack, "reference:write")
        for dataset, filename in FILES.items():
            path = EPRACCUR if dataset == "gp-practices" else SAMPLE / "reference" / filename
            r = httpx.put(
                f"{apis[0].url}/v1/reference/{dataset}",
                content=path.read_bytes(),
                headers={**admin, "Content-Type": "text/csv"},
                timeout=120,
            )
            assert r.status_code == 200, r.text
        submitted: list[tuple[str, str, str]] = []
        for n, name in enumerate((SAMPLE / "invoices" / "ORDER").read_text().split()):
            provider = name.split("-")[0]
            api = apis[n % 2]
            r = httpx.post(
                f"{api.url}/v1/invoices",
                files=_multipart(name),
                headers=_headers(stack, "invoices:submit", provider),
                timeout=120,
            )
            assert r.status_code == 202, r.text
            submitted.append((name, provider, r.json()["id"]))
        got: dict[tuple[str, str], dict[str, Any]] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for n, (name, provider, invoice_id) in enumerate(submitted):
            api = apis[(n + 1) % 2]  # read back through the other API
            headers = _headers(stack, "invoices:submit", provider)

            def done(url: str = api.url, iid: str = invoice_id, h: dict[str, str] = headers) -> Any:
                body = httpx.get(f"{url}/v1/invoices/{iid}", headers=h, timeout=30).json()
                return body if body["status"] not in ("received", "validating") else None

            body = wait_for(done, f"{name} to be validated", timeout=240)
            assert body["status"] == "validated", body
            summaries[name] = body["summary"]
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                page = httpx.get(
                    f"{api.url}/v1/invoices/{invoice_id}/lines", params=params, headers=headers, timeout=30
                ).json()
                for item in page["items"]:
                    got[(name, item["line_ref"])] = item
                cursor = page["next_cursor"]
                if not cursor:
                    break
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0]  # SIGTERM ends a worker cleanly
    assert_sample_outcomes(got, summaries)


def _running_worker(workers: list[Worker], seq: int) -> Worker | None:
    """The worker whose process runs the invoice's validation job: procrastinate's tables do not
    say which process a worker id is, so each job's start is logged with the process id
    (`validation_job_started`), and the last start logged for the invoice names the process."""
    started: list[tuple[str, Worker]] = []
    for worker in workers:
        assert worker.process is not None
        if not worker.log.exists():
            continue
        for line in worker.log.read_text(errors="replace").splitlines():
            if '"validation_job_started"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:  # the line being written as we read
                continue
            if event.get("invoice_seq") == seq and event.get("pid") == worker.process.pid:
                started.append((str(event.get("timestamp", "")), worker))
    return max(started, key=lambda found: found[0])[1] if started else None


def test_a_worker_killed_mid_invoice_is_replaced_by_the_other(tmp_path: Path, database_factory: Any) -> None:
    world = generate_world.generate(seed=55, patients=400, invoices=0)
    # Big enough to take several seconds on this machine, in batches that show progress early.
    header, backing, expected = big_invoice(world, 60_000, seed=56)
    reference = write_reference(world, tmp_path / "world")
    provider = header["provider_code"]
    env = {**QUEUE_ENV, "CEF_API_VALIDATION_BATCH_LINES": "5000"}
    with replicas(tmp_path, database_factory, reference, env) as (stack, apis, workers):
        r = stack.submit(header, backing, key="big-1")
        assert r.status_code == 202, r.text
        invoice_id = r.json()["id"]
        api_db = stack["cef-api"].env["CEF_API_DATABASE_URL"]
        wait_for(lambda: stack.invoice(invoice_id, provider)["lines_done"] > 0, "validation to start", 120)
        victim = wait_for(lambda: _running_worker(workers, 1), "a worker to hold the job", 30)
        victim.kill()
        survivor = next(w for w in workers if w is not victim)
        assert survivor.process is not None
        assert survivor.process.poll() is None  # it is the one left to finish the invoice
        body = wait_for(lambda: finished(stack, invoice_id, provider), "the other worker to finish", 300)
    assert body["status"] == "validated", body
    assert summary_counts(body) == expected_counts(expected)
    engine = db.make_engine(api_db)
    try:
        with engine.connect() as conn:
            outcomes = dict(
                conn.execute(
                    sa.text(
                        "SELECT line_ref, outcome FROM invoice_line WHERE invoice_seq = 1 ORDER BY line_no"
                    )
                ).all()
            )
            left = conn.execute(sa.text("SELECT count(*) FROM queue_backing")).scalar_one()
    finally:
        engine.dispose()
    assert outcomes == {e.line_ref: e.outcome for e in expected}
    assert left == 0
