"""What a CSV export of a million-line invoice costs: time, CPU and the memory it adds.

Stores `--lines` line outcomes of one invoice (rows shaped as validation stores them, through
`repository.insert_lines`, as `storage_floor.py` does) into a fresh database made by the service's
migrations, marks the invoice validated, and then runs the export of `GET /v1/invoices/{id}/lines`
with `Accept: text/csv` in this process, the provider's and the CEF staff's, reading every chunk
as the HTTP response would send it. Prints the seconds, the CPU seconds, the bytes and rows, and
how far the process's peak RSS (VmHWM, reset before each export) rose above its RSS before it.

    .venv/bin/python benchmarks/export_bench.py [--lines 1000000] [--database-url postgresql://…]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.invoices import exports, repository
from cef_api.invoices.models import InvoiceStatus
from cef_api.main import MIGRATIONS
from cef_common import db
from cef_common.auth import Principal

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storage_floor  # noqa: E402

LOCAL_POSTGRES = storage_floor.LOCAL_POSTGRES


def rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    Path("/proc/self/clear_refs").write_text("5")


def store(engine: Engine, lines: int) -> str:
    seq = storage_floor.new_invoice(engine)
    valid = query = rejected = 0
    batch: list[tuple[object, ...]] = []
    with repository.job_connection(engine) as connection, Session(bind=connection) as session:
        for row in storage_floor.line_rows(seq, lines):
            outcome = row[3]
            valid, query, rejected = (
                valid + (outcome == "valid"),
                query + (outcome == "query"),
                rejected + (outcome == "rejected"),
            )
            batch.append(row)
            if len(batch) == storage_floor.BATCH:
                repository.insert_lines(session, batch)
                session.commit()
                batch = []
        if batch:
            repository.insert_lines(session, batch)
        repository.update_invoice(
            session,
            seq,
            status=InvoiceStatus.VALIDATED,
            lines=lines,
            lines_done=lines,
            valid=valid,
            query=query,
            rejected=rejected,
        )
        session.commit()
    with Session(engine) as session:
        invoice = repository.by_seq(session, seq)
        assert invoice is not None
        return invoice.id


def export(engine: Engine, invoice_id: str, principal: Principal, label: str) -> None:
    reset_peak()
    before = rss_mib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    with Session(engine) as session:
        out = exports.line_export(
            session,
            engine=engine,
            principal=principal,
            invoice_id=invoice_id,
            outcome=None,
            page_size=exports.PAGE_LINES,
        )
        session.commit()
    size = newlines = 0
    first_byte = None
    for chunk in out.chunks:
        if first_byte is None:
            first_byte = time.perf_counter() - started
        size += len(chunk)
        newlines += chunk.count(b"\r\n")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = rss_mib("VmHWM")
    print(
        f"  {label:<9} {newlines - 1:>9,} rows {size / 2**20:7.1f} MiB  {wall:5.1f} s "
        f"({(newlines - 1) / wall:>7,.0f} rows/s, first byte {first_byte or 0:.2f} s, CPU {cpu:5.1f} s)  "
        f"RSS {before:5.0f} MiB, peak {peak:5.0f} MiB (+{peak - before:.0f})"
    )


def measure(url: str, lines: int, name: str) -> None:
    db.upgrade(Path(MIGRATIONS), url)
    engine = db.make_engine(url)
    try:
        started = time.perf_counter()
        invoice_id = store(engine, lines)
        print(f"{name}: {lines:,} lines stored in {time.perf_counter() - started:.1f} s; exports:")
        provider = Principal(sub="bench", issuer="bench", scopes=frozenset({"invoices:submit"}), org="RXX")
        staff = Principal(sub="bench", issuer="bench", scopes=frozenset({"invoices:validate"}), org="00C")
        export(engine, invoice_id, provider, "provider")
        export(engine, invoice_id, staff, "staff")
    finally:
        engine.dispose()


def main() -> int:
    return storage_floor.run_on_both_databases(
        __doc__, measure, scratch_prefix="cef_export_bench", tmp_prefix="cef-export-"
    )


if __name__ == "__main__":
    raise SystemExit(main())
