"""Audit service benchmark: batched append rate, single-event append latency, verify time and query
latency on a log of a million events (figures for docs/audit.md).

    .venv/bin/python benchmarks/audit_bench.py                      # 1,000,000 events on SQLite
    .venv/bin/python benchmarks/audit_bench.py --events 100000      # quicker
    .venv/bin/python benchmarks/audit_bench.py --big-batch-events 0 # only 1,000-event batches
    .venv/bin/python benchmarks/audit_bench.py --database-url postgresql://postgres@127.0.0.1:5432/cef_audit_bench

A PostgreSQL database named by --database-url must exist and be empty; it is migrated here.
Wall-clock and CPU time are both printed: on a shared machine the CPU time is the steadier figure."""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cef_audit.config import Settings
from cef_audit.integrity.verify import verify_log
from cef_audit.log.records import Recorder
from cef_audit.log.sequencer import AuditLog
from cef_audit.main import MIGRATIONS, create_app
from cef_common import db
from cef_common.audit import AuditActor, AuditEntity, AuditEventIn
from cef_common.auth import ensure_dev_issuer
from cef_common.testing import ServerThread

TYPES = [
    "invoice.submit",
    "invoice.read",
    "invoice.lines.read",
    "invoice.decide",
    "patient.tokenise",
    "patient.detokenise",
    "reference.load",
    "key.rotate",
]
ACTIONS = {
    "invoice.submit": "create",
    "invoice.read": "read",
    "invoice.lines.read": "read",
    "invoice.decide": "update",
    "patient.tokenise": "execute",
    "patient.detokenise": "execute",
    "reference.load": "update",
    "key.rotate": "create",
}


def events(start: int, n: int, rng: random.Random) -> list[AuditEventIn]:
    out = []
    for i in range(start, start + n):
        type_ = rng.choice(TYPES)
        roll = rng.random()
        outcome = "denied" if roll < 0.01 else "failure" if roll < 0.03 else "success"
        out.append(
            AuditEventIn(
                action=ACTIONS[type_],  # type: ignore[arg-type]
                type=type_,
                outcome=outcome,  # type: ignore[arg-type]
                actor=AuditActor(
                    sub=f"user-{rng.randrange(200)}",
                    org=f"R{rng.randrange(30):02d}",
                    client="portal",
                    issuer="cef-dev",
                ),
                source="cef-api" if not type_.startswith("patient") else "tokeniser",
                entity=AuditEntity(type="invoice", id=f"inv-{i // 10}", count=rng.randrange(1, 5000)),
                purpose="invoice validation" if type_ != "patient.detokenise" else "query resolution",
                request_id=uuid.uuid4().hex,
                detail={"lines": rng.randrange(1, 5000), "key_version": 3},
            )
        )
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def batches(total: int, size: int, rng: random.Random) -> Iterator[list[AuditEventIn]]:
    for start in range(0, total, size):
        yield events(start, min(size, total - start), rng)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per batch while filling the log")
    parser.add_argument(
        "--big-batch", type=int, default=10_000, help="events per batch of the second append figure"
    )
    parser.add_argument(
        "--big-batch-events",
        type=int,
        default=100_000,
        help="events appended in --big-batch batches on top of the full log (0: skip)",
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--singles", type=int, default=500, help="single-event appends timed over HTTP")
    parser.add_argument("--queries", type=int, default=300, help="queries timed over HTTP")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cef-audit-bench-"))
    try:
        run(args, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # a million events take over a gigabyte


def run(args: argparse.Namespace, data_dir: Path) -> None:
    rng = random.Random(7)
    url = args.database_url or f"sqlite:///{data_dir / 'audit.db'}"
    db.upgrade(MIGRATIONS, url)
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        dev_issuer_enabled=True,
        environment="test",
        checkpoint_interval_seconds=0,
        log_level="WARNING",
        gc_freeze_at_startup=True,  # as in production (off only in the test environment)
    )
    signer = ensure_dev_issuer(data_dir / "keys")
    writer = {
        "Authorization": "Bearer "
        + signer.mint(
            sub="cef-api", audience="audit", scopes=["audit:write"], ttl_seconds=3600, client="cef-api"
        )
    }
    reader = {
        "Authorization": "Bearer "
        + signer.mint(sub="auditor", audience="audit", scopes=["audit:read"], ttl_seconds=3600)
    }
    app = create_app(settings)
    print(f"database: {db.make_engine(url).dialect.name}; events: {args.events:,}; batch: {args.batch}")

    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=600) as http:
        log: AuditLog = app.state.audit_log
        producer = Recorder(sub="cef-api", issuer="cef-dev", client="cef-api")

        def append_rate(total: int, size: int, note: str = "") -> None:
            wall = cpu = 0.0
            generated = 0
            for batch in batches(total, size, rng):
                _, w, c = timed(log.append, batch, recorded_by=producer)
                wall, cpu, generated = wall + w, cpu + c, generated + len(batch)
            print(
                f"batched append, sequencer: {generated / wall:,.0f} events/s wall "
                f"({generated / cpu:,.0f}/s of CPU), {size:,}-event batches{note}"
            )

        # 1. Batched appends through the sequencer (what a batch POST does once parsed), filling the log.
        append_rate(args.events, args.batch)
        # The same on top of the full log, in the largest batches the API accepts by default.
        if args.big_batch_events:
            append_rate(args.big_batch_events, args.big_batch, f" ({args.big_batch_events:,} more events)")

        if log.engine.dialect.name == "postgresql":
            # What autovacuum does soon after a bulk load; without statistics the planner guesses.
            with log.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE audit_events")

        # 2. Batched appends over HTTP (JSON parsing, validation, auth included).
        bodies = [
            b'{"events":['
            + b",".join(e.model_dump_json().encode() for e in events(10**9 + k * args.batch, args.batch, rng))
            + b"]}"
            for k in range(20)
        ]
        started = time.perf_counter()
        for body in bodies:
            r = http.post("/v1/events", content=body, headers={**writer, "Content-Type": "application/json"})
            r.raise_for_status()
        elapsed = time.perf_counter() - started
        print(
            f"batched append, HTTP:      {20 * args.batch / elapsed:,.0f} events/s "
            f"({args.batch}-event batches)"
        )

        # 3. Single-event appends over HTTP, one after another.
        latencies = []
        for e in events(2 * 10**9, args.singles, rng):
            body = e.model_dump_json()
            t = time.perf_counter()
            r = http.post("/v1/events", content=body, headers={**writer, "Content-Type": "application/json"})
            latencies.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        print(
            f"single append, HTTP:       p50 {percentile(latencies, 50):.1f} ms, "
            f"p99 {percentile(latencies, 99):.1f} ms ({args.singles} sequential)"
        )

        # 4. Verify the whole log: in process, and as an auditor calls it.
        report, w, c = timed(verify_log, log.engine, log.signing_key.jwks())
        assert report.valid, report.problems
        print(
            f"verify, in process:        {report.length:,} events in {w:.2f} s wall ({c:.2f} s CPU), "
            f"{report.checkpoints_checked:,} checkpoints"
        )
        t = time.perf_counter()
        verdict = http.get("/v1/verify", headers=reader).json()
        print(
            f"verify, GET /v1/verify:    {verdict['length']:,} events in {time.perf_counter() - t:.2f} s, "
            f"valid={verdict['valid']}"
        )

        # 5. Queries on the full log (each one also appends its own audit event).
        now = datetime.now(UTC)
        shapes = [
            lambda: {"actor": f"user-{rng.randrange(200)}"},
            lambda: {"org": f"R{rng.randrange(30):02d}"},
            lambda: {"type": rng.choice(TYPES)},
            lambda: {"type": "patient.*"},
            lambda: {"entity": f"inv-{rng.randrange(args.events // 10)}"},
            lambda: {"outcome": "denied"},
            lambda: {"action": "update", "org": f"R{rng.randrange(30):02d}"},
            lambda: {"since": (now - timedelta(seconds=rng.randrange(1, 60))).isoformat()},
            lambda: {"actor": f"user-{rng.randrange(200)}", "order": "desc"},
        ]
        per_shape: dict[str, list[float]] = {}
        latencies = []
        for i in range(args.queries):
            params = shapes[i % len(shapes)]()
            t = time.perf_counter()
            r = http.get("/v1/events", params={**params, "limit": 100}, headers=reader)
            ms = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            latencies.append(ms)
            per_shape.setdefault(",".join(sorted(params)), []).append(ms)
        print(
            f"query, GET /v1/events:     p50 {percentile(latencies, 50):.1f} ms, "
            f"p99 {percentile(latencies, 99):.1f} ms ({args.queries} queries, limit 100)"
        )
        for shape, values in per_shape.items():
            print(f"    {shape:<18} p50 {statistics.median(values):6.1f} ms   max {max(values):6.1f} ms")


if __name__ == "__main__":
    main()
