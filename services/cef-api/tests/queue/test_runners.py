"""Both runners behind `ValidationQueue` pass the same tests: background jobs end with exactly the
outcomes of the synchronous path (the world's expected outcomes) in submission order, and leave
no backing data behind. The procrastinate runner also survives a worker dying mid-job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, running_api
from queue_support import queue_settings
from sqlmodel import Session

from cef_api.invoices import jobs, repository
from cef_api.queue import InProcessQueue, create_queue, runner_kind
from cef_api.queue.procrastinate_runner import TASK_NAME, ProcrastinateQueue, make_app
from cef_common import db


async def _wait_validated(api: Api, invoice_id: str, org: str, seconds: float = 180) -> dict[str, Any]:
    headers = api.h("invoices:submit", org=org)
    for _ in range(int(seconds / 0.1)):
        body: dict[str, Any] = (await api.client.get(f"/v1/invoices/{invoice_id}", headers=headers)).json()
        if body["status"] not in ("received", "validating"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"invoice still {body['status']} after {seconds} s")


async def _submit_all(api: Api, world: generate_world.World) -> list[str]:
    ids = []
    for inv in world.invoices:
        r = await api.submit(inv.header, inv.backing)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


async def _assert_expected(api: Api, world: generate_world.World, ids: list[str]) -> None:
    for inv, invoice_id in zip(world.invoices, ids, strict=True):
        org = inv.header["provider_code"]
        body = await _wait_validated(api, invoice_id, org)
        assert body["status"] == "validated", body
        lines = await api.lines(invoice_id, "invoices:submit", org)
        assert [(x["line_ref"], x["outcome"], sorted(x["reasons"])) for x in lines] == [
            (e.line_ref, e.outcome, sorted(e.reasons)) for e in inv.expected
        ]


def _backing_rows(url: str) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM queue_backing")).scalar_one())
    finally:
        engine.dispose()


async def test_queued_jobs_end_with_the_synchronous_outcomes(
    data_dir: Path, runner: str, runner_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    settings = queue_settings(data_dir, runner_db, tokeniser.url)
    assert runner_kind(settings) == runner
    async with running_api(settings, dev_issuer) as api:
        assert api.app.state.validation_worker.kind == runner
        await api.load_world(world)
        ids = await _submit_all(api, world)
        await _assert_expected(api, world, ids)
        for _ in range(100):
            if api.app.state.validation_worker.pending() == 0:
                break
            await asyncio.sleep(0.1)
        assert api.app.state.validation_worker.pending() == 0
    # The job's stored data went with it, and no spool is left on disk.
    assert _backing_rows(runner_db) == 0
    assert not list((data_dir / "spool").glob("*"))


async def test_order_holds_across_worker_nodes(
    data_dir: Path, runner: str, runner_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    """Every invoice is queued before any runs; the runners (two worker nodes for procrastinate)
    must still validate each commissioner's invoices in submission order: their outcomes (which
    look back at earlier invoices) are the expected ones, and their validation times ascend."""
    settings = queue_settings(data_dir, runner_db, tokeniser.url, queue_embedded_worker=False)
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        queue = api.app.state.validation_worker
        if isinstance(queue, InProcessQueue):
            queue.stop()  # hold the jobs back: the queue is drained by hand below
            queue.worker._stop = False
        ids = await _submit_all(api, world)
        engine = db.make_engine(runner_db)
        nodes: list[Any] = []
        try:
            if isinstance(queue, InProcessQueue):
                assert queue.pending() == len(ids)
                queue.start()
            else:
                assert queue.pending() == len(ids)
                for n in range(2):
                    node = create_queue(engine, api.app.state.tokeniser, settings, worker_name=f"node-{n}")
                    node.start()
                    nodes.append(node)
            await _assert_expected(api, world, ids)
        finally:
            for node in nodes:
                node.stop()
        with Session(engine) as session:
            done = [repository.by_id(session, i) for i in ids]
        engine.dispose()
    by_commissioner: dict[str, list[Any]] = {}
    for invoice in done:
        assert invoice is not None
        by_commissioner.setdefault(invoice.commissioner_code, []).append(invoice)
    for invoices in by_commissioner.values():
        invoices.sort(key=lambda i: i.seq)
        times = [i.validated_at for i in invoices]
        assert times == sorted(times)


class SimulatedCrash(BaseException):
    """Stands for the process dying: no `except Exception` handler of the job runs."""


@pytest.mark.parametrize("runner", ["procrastinate"])
async def test_a_job_whose_worker_died_is_restarted_with_the_same_outcomes(
    data_dir: Path, runner: str, runner_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    """A worker takes the job, commits the first batches of lines and dies (no heartbeat since):
    another node retries the job, the broken attempt's lines go in the restart's transaction, and the
    outcomes are exactly those of an uninterrupted run."""
    settings = queue_settings(data_dir, runner_db, tokeniser.url, queue_embedded_worker=False)
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        ids = await _submit_all(api, world)
        engine = db.make_engine(runner_db)
        queue = api.app.state.validation_worker
        assert isinstance(queue, ProcrastinateQueue)
        # The dying worker: a registered procrastinate worker that fetches the first job.
        app = make_app(settings, None)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            job = await app.job_manager.fetch_job(queues=["validation"], worker_id=worker_id)
            assert job is not None
            assert job.task_name == TASK_NAME
            seq = int(job.task_kwargs["seq"])
            with Session(engine) as session:
                invoice = repository.by_seq(session, seq)
            assert invoice is not None
            attempt = jobs.claim(engine, invoice)
            assert attempt == 1
            spool = queue.store.restore(seq, data_dir / "spool", queue.cipher)
            survey = jobs.survey_lines(spool, settings.validation_batch_lines)

            def crash_after_two_batches(done: int) -> None:
                if done >= 2 * settings.validation_batch_lines:
                    raise SimulatedCrash()

            with pytest.raises(SimulatedCrash):
                await asyncio.to_thread(
                    jobs.validate_invoice,
                    engine,
                    seq=seq,
                    spool=spool,
                    survey=survey,
                    tokeniser=api.app.state.tokeniser,
                    settings=settings,
                    attempt=attempt,
                    on_batch=crash_after_two_batches,
                )
            spool.delete()
            with engine.connect() as conn:
                half = conn.execute(
                    sa.text("SELECT count(*) FROM invoice_line WHERE invoice_seq = :s"), {"s": seq}
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"
                        " WHERE id = :id"
                    ),
                    {"id": worker_id},
                )
                conn.commit()
        assert half == 2 * settings.validation_batch_lines
        # A live node finds the stalled job and finishes every invoice.
        node = create_queue(engine, api.app.state.tokeniser, settings, worker_name="survivor")
        node.start()
        try:
            await _assert_expected(api, world, ids)
        finally:
            node.stop()
        with engine.connect() as conn:
            events = [
                str(p)
                for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox"))
                if "invoice.validate.restart" in str(p)
            ]
        engine.dispose()
    assert len(events) == 1
    assert _backing_rows(runner_db) == 0
