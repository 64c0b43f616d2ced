"""What storing a large invoice's line outcomes costs the database itself: the floor under the
end-to-end figure of `cef_api_bench.py`, whatever the rest of the service does.

Makes `--lines` rows shaped like the ones validation stores (a token, a duplicate-key digest on
the lines that count, the sample's mix of outcomes) and inserts them into a fresh `invoice_line`
table made by the service's own migrations, the way a validation job does: batches of 50,000
rows, one transaction each, through `repository.insert_lines` (executemany on SQLite, COPY on
PostgreSQL), on the job's connection. Then the same rows again with no secondary index, to show
what the indexes cost. Prints lines per second and the CPU seconds of this process, and on
PostgreSQL those of the server process that did the writing.

The validation job is one writer: SQLite admits one at a time, and the job's batches are stored
in line order (the duplicate check needs them so). These figures are therefore a ceiling on
end-to-end throughput on the machine they were taken on.

    .venv/bin/python benchmarks/storage_floor.py [--lines 1000000] [--database-url postgresql://…]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.invoices import repository
from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.main import MIGRATIONS
from cef_common import db

BATCH = 50_000
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SECONDARY_INDEXES = ("ix_invoice_line_counted_dup_key", "ix_invoice_line_query_ref")
# The outcome mix of the benchmark world: (outcome, reasons, share).
OUTCOMES = (("valid", "", 0.60), ("query", "PATIENT_NOT_FOUND", 0.21), ("rejected", "MALFORMED_LINE", 0.19))


def line_rows(seq: int, lines: int, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """Rows in `repository.LINE_COLUMNS` order, as a validation job stores them."""
    rng = random.Random(seed)
    first_day = date(2019, 1, 1)
    days = [(first_day + timedelta(days=d)).isoformat() for d in range(365)]
    kinds = [kind for kind, _, _ in OUTCOMES]
    weights = [share for _, _, share in OUTCOMES]
    reasons = {kind: why for kind, why, _ in OUTCOMES}
    for line_no in range(1, lines + 1):
        outcome = rng.choices(kinds, weights)[0]
        pennies = rng.randrange(5_000, 2_000_000)
        token = "N1." + hashlib.blake2b(rng.randbytes(8), digest_size=18).hexdigest()[:24]
        counted = outcome != "rejected"
        yield (
            seq,
            line_no,
            f"{line_no:07d}",
            outcome,
            reasons[outcome],
            "00C" if counted else None,
            pennies if counted else None,
            pennies,
            token,
            rng.choice(days),
            f"AB{rng.randrange(100):02d}C",
            rng.choice(("EL", "NEL", "DC", "OPFA", "OPFU")),
            None,
            "D1." + token[3:],  # dob_token and postcode_token: token-shaped, as a job stores them
            "P1." + token[3:],
            hashlib.blake2b(rng.randbytes(16), digest_size=16).hexdigest() if counted else None,
        )


def new_invoice(engine: Engine) -> int:
    with Session(engine) as session:
        invoice = Invoice(
            id=str(uuid.uuid4()),
            invoice_number=f"FLOOR-{uuid.uuid4().hex[:8]}",
            provider_code="RXX",
            commissioner_code="00C",
            invoice_date=date(2019, 12, 1),
            period_start=date(2019, 1, 1),
            period_end=date(2019, 12, 31),
            status=InvoiceStatus.VALIDATING,
            submitted_at=datetime.now(UTC),
            submitted_by="storage-floor",
            request_hash="0" * 64,
            backing_bytes=0,
        )
        session.add(invoice)
        session.commit()
        assert invoice.seq is not None
        return invoice.seq


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store(engine: Engine, lines: int, label: str) -> None:
    """Inserts `lines` rows of one new invoice as a validation job does, and prints the figures."""
    seq = new_invoice(engine)
    rows = list(line_rows(seq, lines))
    with repository.job_connection(engine) as connection, Session(bind=connection) as session:
        server_pid = None
        if connection.dialect.name == "postgresql":
            server_pid = int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        server_before = cpu_seconds(server_pid) if server_pid else 0.0
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, lines, BATCH):
            repository.insert_lines(session, rows[start : start + BATCH])
            repository.update_invoice(session, seq, lines_done=min(start + BATCH, lines))
            session.commit()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        server = f", database server {cpu_seconds(server_pid) - server_before:5.1f} s" if server_pid else ""
    rate = f"{lines / wall:>9,.0f} lines/s"
    print(f"  {label:<28} {wall:6.1f} s  {rate}  (CPU: this process {cpu:5.1f} s{server})")


def measure(url: str, lines: int, name: str) -> None:
    db.upgrade(Path(MIGRATIONS), url)
    engine = db.make_engine(url)
    try:
        print(f"{name}: {lines:,} line outcomes in batches of {BATCH:,}")
        store(engine, lines, "with the service's indexes")
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM invoice_line"))
            for index in SECONDARY_INDEXES:
                connection.execute(sa.text(f"DROP INDEX {index}"))
        store(engine, lines, "line_no index only")
    finally:
        engine.dispose()


def run_on_both_databases(
    doc: str | None, measure: Callable[[str, int, str], None], *, scratch_prefix: str, tmp_prefix: str
) -> int:
    """A benchmark's command line: `measure(url, lines, label)` on SQLite in a temporary directory,
    then on a scratch database of the PostgreSQL server (created and dropped here), unless none."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CEF_BENCH_POSTGRES_URL", LOCAL_POSTGRES),
        help="a PostgreSQL server where a scratch database may be created and dropped ('' to skip)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
        measure(f"sqlite:///{Path(tmp) / 'cef-api.db'}", args.lines, "SQLite")
    if not args.database_url:
        return 0
    admin_url = sa.make_url(db.normalise_url(args.database_url))
    scratch = f"{scratch_prefix}_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{scratch}"'))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL: skipped, no server at {admin_url.render_as_string()} ({type(exc).__name__})")
        return 0
    try:
        scratch_url = admin_url.set(database=scratch).render_as_string(hide_password=False)
        measure(scratch_url, args.lines, "PostgreSQL")
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()
    return 0


def main() -> int:
    return run_on_both_databases(
        __doc__, measure, scratch_prefix="cef_storage_floor", tmp_prefix="cef-floor-"
    )


if __name__ == "__main__":
    raise SystemExit(main())
