"""Background validation in worker processes: the same answers as in the service process, and a
clean failure (nothing kept, a reason to act on) when a worker cannot finish its batch."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, api_settings, identifiers_in, running_api

from cef_api.config import Settings
from cef_api.invoices.workers import BatchFailed, ValidationPool
from cef_common.testing import database_values


async def _settled(api: Api, response: Any, org: str) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    for _ in range(2400):  # up to 2 minutes on a busy machine
        if body["status"] in ("validated", "failed"):
            return body
        await asyncio.sleep(0.05)
        body = (
            await api.client.get(f"/v1/invoices/{body['id']}", headers=api.h("invoices:submit", org=org))
        ).json()
    raise AssertionError(f"invoice still {body['status']}")


def _settings(data_dir: Path, db: str, tokeniser: Any, processes: int = 1) -> Settings:
    return api_settings(
        data_dir,
        db,
        tokeniser.url,
        async_threshold_bytes=10,
        validation_batch_lines=4,
        validation_processes=processes,
    )


def _line_count(db: str) -> int:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        count = int(conn.execute(sa.text("SELECT count(*) FROM invoice_line")).scalar_one())
    engine.dispose()
    return count


async def test_every_invoice_of_a_world_validates_as_designed_in_worker_processes(
    data_dir: Path,
    sqlite_api_db: str,
    tokeniser: Any,
    dev_issuer: Any,
    world: generate_world.World,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Batches of four lines assessed in two processes, duplicates across batches and invoices; no
    identifier in the database afterwards, nor in anything a process wrote to its output."""
    async with running_api(_settings(data_dir, sqlite_api_db, tokeniser, processes=2), dev_issuer) as api:
        await api.load_world(world)
        for inv in world.invoices:
            org = inv.header["provider_code"]
            body = await _settled(api, await api.submit(inv.header, inv.backing), org)
            assert body["status"] == "validated", body
            got = await api.lines(body["id"], "invoices:submit", org)
            assert [(x["line_ref"], x["outcome"], tuple(x["reasons"])) for x in got] == [
                (e.line_ref, e.outcome, e.reasons) for e in inv.expected
            ], inv.header["invoice_number"]
            want = generate_world.summary_of(inv)
            assert {k: str(v) for k, v in body["summary"].items()} == {k: want[k] for k in body["summary"]}
        assert identifiers_in(database_values(api.app.state.engine), world) == []
    assert not list((data_dir / "spool").glob("*"))
    out, err = capfd.readouterr()  # the workers' output too: they write to the inherited descriptors
    assert identifiers_in([("output", out), ("error output", err)], world) == []


async def test_a_worker_that_cannot_reach_the_tokeniser_fails_the_invoice_cleanly(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    async with running_api(_settings(data_dir, sqlite_api_db, tokeniser), dev_issuer) as api:
        await api.load_world(world)
        tokeniser.server.stop()
        inv = world.invoices[0]
        org = inv.header["provider_code"]
        body = await _settled(api, await api.submit(inv.header, inv.backing), org)
    assert body["status"] == "failed"
    assert "tokeniser" in body["failure_reason"]
    assert "submit it again" in body["failure_reason"]
    assert _line_count(sqlite_api_db) == 0


async def test_a_worker_process_that_dies_fails_its_invoice_and_the_next_one_validates(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    async with running_api(_settings(data_dir, sqlite_api_db, tokeniser), dev_issuer) as api:
        await api.load_world(world)
        first, second = world.invoices[0], world.invoices[1]
        org = first.header["provider_code"]
        assert (await _settled(api, await api.submit(first.header, first.backing), org))[
            "status"
        ] == "validated"
        pool: ValidationPool = api.app.state.validation_worker.pool
        assert pool._executor is not None
        for pid in list(pool._executor._processes):  # the workers of the pool now running
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        org = second.header["provider_code"]
        body = await _settled(api, await api.submit(second.header, second.backing), org)
        if body["status"] == "failed":  # the dead pool was met mid-invoice: the one after runs on a new one
            assert "worker process" in body["failure_reason"]
            retry = {**second.header, "invoice_number": second.header["invoice_number"] + "-again"}
            body = await _settled(api, await api.submit(retry, second.backing), org)
        assert body["status"] == "validated"
        assert body["summary"]["lines"] == len(second.expected)


def test_a_pool_needs_a_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one process"):
        ValidationPool(Settings(data_dir=tmp_path), 0)


def test_batch_failed_carries_its_reason_across_processes() -> None:
    import pickle

    failure = pickle.loads(pickle.dumps(BatchFailed("the tokeniser could not be reached")))
    assert isinstance(failure, BatchFailed)
    assert failure.detail == "the tokeniser could not be reached"


def test_worker_processes_default_to_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert Settings(data_dir=tmp_path).effective_validation_processes == max(1, min(4, cpus))
    assert Settings(data_dir=tmp_path, validation_processes=0).effective_validation_processes == 0
    assert Settings(data_dir=tmp_path, validation_processes=3).effective_validation_processes == 3


_ORPHAN_SCRIPT = """
import sys, tempfile, time
from pathlib import Path
from cef_api.config import Settings
from cef_api.invoices.workers import ValidationPool

if __name__ == "__main__":
    pool = ValidationPool(Settings(data_dir=Path(tempfile.mkdtemp()), environment="test"), 2)
    pool.warm()
    processes = pool._executor._processes
    while len(processes) < 2 or not all(p.is_alive() for p in processes.values()):
        time.sleep(0.05)
    print(" ".join(str(pid) for pid in pool._executor._processes), flush=True)
    time.sleep(120)
"""


def test_workers_end_when_the_service_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    script = tmp_path / "service.py"
    script.write_text(_ORPHAN_SCRIPT)
    service = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        pids = [int(pid) for pid in service.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        service.kill()
        service.wait(10)

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] not in "ZX"
        except OSError:
            return False

    # A bound, not a speed: a worker still importing when the service died ends once it has
    # started watching its parent, which on a loaded machine can take a while.
    deadline = time.monotonic() + 120
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)
