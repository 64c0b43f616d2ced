"""The fence against a zombie worker: a validation attempt whose job was restarted elsewhere (its
worker was thought dead: a long pause, a frozen VM) and that then resumes writes nothing, and the
invoice ends with exactly the outcomes of an uninterrupted run. Both runners' databases: the
attempt number and the conditional writes hold on SQLite as on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import running_api
from queue_support import queue_settings
from sqlmodel import Session

from cef_api.invoices import jobs, repository
from cef_api.invoices.models import InvoiceStatus
from cef_api.queue import InProcessQueue
from cef_api.queue.procrastinate_runner import ProcrastinateQueue
from cef_api.spool import EncryptedSpool
from cef_common import db


class PausedAttempt:
    """One validation attempt in a thread of its own that stops after `pause_after` batches until
    resumed, standing for a worker that froze (or is merely slower) mid-job."""

    def __init__(
        self,
        engine: sa.Engine,
        seq: int,
        attempt: int,
        spool: EncryptedSpool,
        settings: Any,
        tokeniser: Any,
        pause_after: int,
    ) -> None:
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.error: BaseException | None = None
        self.writes_after_resume = 0
        batch = settings.validation_batch_lines
        survey = jobs.survey_lines(spool, batch)

        def on_batch(done: int) -> None:
            if self.resume.is_set():
                self.writes_after_resume += 1
            elif done >= pause_after * batch:
                self.paused.set()
                assert self.resume.wait(60)

        def run() -> None:
            try:
                jobs.validate_invoice(
                    engine,
                    seq=seq,
                    spool=spool,
                    survey=survey,
                    tokeniser=tokeniser,
                    settings=settings,
                    attempt=attempt,
                    on_batch=on_batch,
                )
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name=f"attempt-{attempt}", daemon=True)
        self.thread.start()

    async def wait_paused(self) -> None:
        assert await asyncio.to_thread(self.paused.wait, 60), "the attempt never reached its pause"

    async def finish(self) -> None:
        self.resume.set()
        await asyncio.to_thread(self.thread.join, 60)
        assert not self.thread.is_alive()


def _lines(engine: sa.Engine, seq: int) -> tuple[int, int, str]:
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM invoice_line WHERE invoice_seq = :s"), {"s": seq}
        ).scalar_one()
        done, status = conn.execute(
            sa.text("SELECT lines_done, status FROM invoice WHERE seq = :s"), {"s": seq}
        ).one()
    return int(count), int(done), str(status)


async def test_a_superseded_attempt_writes_nothing_and_the_outcomes_are_an_uninterrupted_runs(
    data_dir: Path, runner: str, runner_db: str, tokeniser: Any, dev_issuer: Any, world: generate_world.World
) -> None:
    settings = queue_settings(data_dir, runner_db, tokeniser.url, queue_embedded_worker=False)
    batch = settings.validation_batch_lines
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        queue = api.app.state.validation_worker
        if isinstance(queue, InProcessQueue):
            queue.stop()  # no runner thread: the attempts below are driven by hand
            queue.worker._stop = False
        first_invoice = world.invoices[0]
        assert len(first_invoice.expected) > 4 * batch
        r = await api.submit(first_invoice.header, first_invoice.backing)
        assert r.status_code == 202, r.text
        invoice_id = r.json()["id"]
        engine = db.make_engine(runner_db)
        try:
            with Session(engine, expire_on_commit=False) as session:
                invoice = repository.by_id(session, invoice_id)
            assert invoice is not None
            assert invoice.seq is not None
            seq = invoice.seq
            if isinstance(queue, ProcrastinateQueue):
                spools = [queue.store.restore(seq, data_dir / "spool", queue.cipher) for _ in range(2)]
            else:
                spools = [queue.worker._jobs[seq].spool] * 2  # one spool, read by each attempt
            tokens = api.app.state.tokeniser

            # Attempt 1 commits two batches and freezes; its job is restarted elsewhere meanwhile.
            assert jobs.claim(engine, invoice) == 1
            zombie = PausedAttempt(engine, seq, 1, spools[0], settings, tokens, pause_after=2)
            await zombie.wait_paused()
            assert _lines(engine, seq) == (2 * batch, 2 * batch, InvoiceStatus.VALIDATING)
            assert jobs.restart_invoice(engine, seq) == 2
            assert _lines(engine, seq) == (0, 0, InvoiceStatus.VALIDATING)

            # Attempt 2 commits one batch and waits: the zombie's lines would now interleave.
            successor = PausedAttempt(engine, seq, 2, spools[1], settings, tokens, pause_after=1)
            await successor.wait_paused()
            assert _lines(engine, seq) == (batch, batch, InvoiceStatus.VALIDATING)
            # A zombie's failure path cannot fail the invoice its successor is validating either.
            jobs.fail_invoice(engine, seq, "the zombie's own failure", attempt=1)
            assert _lines(engine, seq) == (batch, batch, InvoiceStatus.VALIDATING)

            # The zombie wakes: it is fenced out at its next write and writes nothing.
            await zombie.finish()
            assert isinstance(zombie.error, jobs.AttemptSuperseded), zombie.error
            assert zombie.writes_after_resume == 0
            assert _lines(engine, seq) == (batch, batch, InvoiceStatus.VALIDATING)

            await successor.finish()
            assert successor.error is None, successor.error
            assert successor.writes_after_resume > 0
            # A write of the zombie after the invoice ended is refused the same way.
            with Session(engine) as session, pytest.raises(jobs.AttemptSuperseded):
                jobs.fenced_update(session, seq, 1, lines_done=0)
            with engine.connect() as conn:
                events = [str(p) for (p,) in conn.execute(sa.text("SELECT payload FROM audit_outbox"))]
        finally:
            engine.dispose()
            if isinstance(queue, ProcrastinateQueue):
                for spool in spools:
                    spool.delete()

        # Exactly the outcomes of an uninterrupted run (the world's expected ones).
        org = first_invoice.header["provider_code"]
        body = (
            await api.client.get(f"/v1/invoices/{invoice_id}", headers=api.h("invoices:submit", org=org))
        ).json()
        assert body["status"] == "validated", body
        assert body["summary"]["lines"] == len(first_invoice.expected)
        lines = await api.lines(invoice_id, "invoices:submit", org)
        assert [(x["line_ref"], x["outcome"], sorted(x["reasons"])) for x in lines] == [
            (e.line_ref, e.outcome, sorted(e.reasons)) for e in first_invoice.expected
        ]
    assert len([e for e in events if "invoice.validate.restart" in e]) == 1
    assert not [e for e in events if '"failure"' in e and "invoice.validate" in e]
