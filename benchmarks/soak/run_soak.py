"""`make soak`: locust, headless, against `cef up` on PostgreSQL; prints throughput, p50 and p99 per
endpoint and the errors, and fails when any request failed.

    .venv/bin/python benchmarks/soak/run_soak.py [--duration 5m] [--providers 20] [--staff 6]
        [--finance 3] [--lines 100] [--patients 20000] [--keep]

What it does, in order:
1. creates four fresh PostgreSQL databases (tokeniser, CEF API, audit, web app) on --admin-url;
2. starts `cef up` on a new data directory with them, on free ports, and waits for "CEF is up";
3. generates a world (benchmarks/generate_world.py) and loads its reference data with
   `cef reference load`;
4. runs locust (benchmarks/soak/locustfile.py) headless for --duration;
5. waits for the invoices still being validated, prints the figures, stops `cef up`, and drops the
   databases and the data directory (unless --keep).
docs/load.md says what each user does and holds the figures of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

import generate_world  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

BIN = Path(sys.executable).parent
SERVICES = {
    # service → its settings' prefix, as `cef up` passes them on
    "tokeniser": "CEF_TOKENISER_",
    "cef-api": "CEF_API_",
    "audit": "CEF_AUDIT_",
    "web": "CEF_WEB_",
}
UP_TIMEOUT = 240.0
STOP_TIMEOUT = 60.0
# Invoices still being validated when locust stops get this long to finish before `cef up` stops.
DRAIN_TIMEOUT = 300.0
OPEN_STATUSES = ("received", "validating")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def duration_seconds(text: str) -> int:
    """Seconds of a locust duration: 90, 90s, 5m, 1h30m."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 5m, 1h30m)")
    h, m, s = (int(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


# --- the databases ------------------------------------------------------------------------------


class Databases:
    """One fresh database per service on a PostgreSQL server, dropped by drop()."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)
        stem = f"cef_soak_{uuid.uuid4().hex[:8]}"
        self.names = {service: f"{stem}_{service.replace('-', '_')}" for service in SERVICES}

    def _execute(self, sql: str) -> None:
        import psycopg

        libpq = self.admin.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def url(self, service: str) -> str:
        return self.admin.set(database=self.names[service]).render_as_string(hide_password=False)

    def create(self) -> None:
        for name in self.names.values():
            self._execute(f'CREATE DATABASE "{name}"')

    def drop(self) -> None:
        for name in self.names.values():
            with contextlib.suppress(Exception):
                self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- cef up --------------------------------------------------------------------------------------


@dataclass
class Stack:
    """`cef up` running, and what the other commands need to reach it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    data_dir: Path
    api_url: str
    log: Path


def _copy_output(stream: IO[bytes], log: IO[str], up: threading.Event) -> None:
    """Copies `cef up`'s output (and its services' logs) to the log file; sets `up` at the banner."""
    for raw in stream:
        line = ANSI.sub("", raw.decode("utf-8", "replace"))
        log.write(line)
        log.flush()
        if "CEF is up" in line:
            up.set()


def start_stack(data_dir: Path, databases: Databases, log_path: Path) -> Stack:
    env = dict(os.environ)
    ports: dict[str, int] = {}
    for service, prefix in SERVICES.items():
        ports[service] = free_port()
        env[f"{prefix}DATABASE_URL"] = databases.url(service)
        env[f"{prefix}PORT"] = str(ports[service])
        # Where a service serves /metrics: free ports too, so that nothing else running here clashes.
        env[f"{prefix}METRICS_PORT"] = str(free_port())
    env["PYTHONUNBUFFERED"] = "1"
    log = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        [str(BIN / "cef"), "up", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Its own process group: Ctrl-C of this script reaches it only through stop_stack().
        start_new_session=True,
    )
    assert process.stdout is not None
    up = threading.Event()
    threading.Thread(target=_copy_output, args=(process.stdout, log, up), daemon=True).start()
    deadline = time.monotonic() + UP_TIMEOUT
    while not up.wait(0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_stack_process(process)
            raise SystemExit(f"`cef up` did not come up; its output is in {log_path}:\n{tail(log_path)}")
    return Stack(process, env, data_dir, f"http://127.0.0.1:{ports['cef-api']}", log_path)


def stop_stack_process(process: subprocess.Popen[bytes]) -> int:
    """Stops `cef up` as Ctrl-C does (it stops its services); kills it only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


# --- the world -----------------------------------------------------------------------------------


def load_world(stack: Stack, seed: int, patients: int) -> None:
    """Generates the world the locustfile draws its invoices from and loads its reference data (it
    replaces the demo world's, which a new data directory starts with)."""
    started = time.perf_counter()
    world = generate_world.generate(seed=seed, patients=patients, invoices=0)
    out = stack.data_dir / "soak-world"
    world.write(out)
    print(f"world: {patients} patients generated in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    with stack.log.open("a", encoding="utf-8") as log:
        rc = subprocess.call(
            [
                str(BIN / "cef"),
                "reference",
                "load",
                str(out / "reference"),
                "--data-dir",
                str(stack.data_dir),
            ],
            env={**stack.env, "COLUMNS": "100"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if rc:
        raise SystemExit(f"`cef reference load` failed (exit {rc}):\n{tail(stack.log)}")
    print(f"world: reference data loaded in {time.perf_counter() - started:.1f} s", flush=True)


# --- locust --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One endpoint's figures, from locust's statistics CSV."""

    kind: str
    name: str
    requests: int
    failures: int
    per_second: float
    p50: str
    p99: str


def read_stats(path: Path) -> tuple[list[Row], Row | None]:
    rows: list[Row] = []
    total: Row | None = None
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row = Row(
                r["Type"],
                r["Name"],
                int(r["Request Count"]),
                int(r["Failure Count"]),
                float(r["Requests/s"]),
                r["50%"],
                r["99%"],
            )
            if r["Name"] == "Aggregated":
                total = row
            else:
                rows.append(row)
    return rows, total


def _progress(stats: Path, started: float, seconds: int, stop: threading.Event) -> None:
    """A line every 30 s while locust runs: it prints nothing of its own (its log is in a file)."""
    while not stop.wait(30):
        said = f"{time.monotonic() - started:4.0f} s of {seconds} s"
        with contextlib.suppress(OSError, KeyError, ValueError):
            _, total = read_stats(stats)
            if total is not None:
                said += f": {total.requests} requests, {total.failures} failed, {total.per_second:.1f} req/s"
        print(f"  {said}", flush=True)


def run_locust(stack: Stack, args: argparse.Namespace, out: Path) -> int:
    users = args.providers + args.staff + args.finance
    prefix = out / "soak"
    env = {
        **os.environ,
        "CEF_SOAK_DATA_DIR": str(stack.data_dir),
        "CEF_SOAK_SEED": str(args.seed),
        "CEF_SOAK_PATIENTS": str(args.patients),
        "CEF_SOAK_LINES": str(args.lines),
        "CEF_SOAK_PROVIDERS": str(args.providers),
        "CEF_SOAK_STAFF": str(args.staff),
        "CEF_SOAK_FINANCE": str(args.finance),
    }
    cmd = [
        str(BIN / "locust"),
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{args.duration}s",
        "--host",
        stack.api_url,
        "--csv",
        str(prefix),
        "--html",
        str(out / "soak.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    print(
        f"locust: {args.providers} providers, {args.staff} staff, {args.finance} finance "
        f"for {args.duration} s against {stack.api_url}",
        flush=True,
    )
    started = time.monotonic()
    stop = threading.Event()
    ticker = threading.Thread(
        target=_progress, args=(Path(f"{prefix}_stats.csv"), started, args.duration, stop), daemon=True
    )
    ticker.start()
    with (out / "locust.log").open("w", encoding="utf-8") as log:
        rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    stop.set()
    return rc


# --- the report ----------------------------------------------------------------------------------


def _ms(value: str) -> str:
    return "" if value in ("", "N/A") else f"{float(value):.0f} ms"


def table(rows: list[Row], total: Row | None) -> Iterator[str]:
    head = ("endpoint", "requests", "req/s", "p50", "p99", "errors")
    body = [
        (
            f"{row.kind} {row.name}",
            str(row.requests),
            f"{row.per_second:.2f}",
            _ms(row.p50),
            _ms(row.p99),
            str(row.failures),
        )
        for row in sorted(rows, key=lambda r: (r.kind == "FLOW", r.name, r.kind))
    ]
    if total is not None:
        # Requests only: locust's "Aggregated" counts the FLOW rows too, which are not requests.
        requests = [row for row in rows if row.kind != "FLOW"]
        body.append(
            (
                "total (requests)",
                str(sum(r.requests for r in requests)),
                f"{sum(r.per_second for r in requests):.2f}",
                "",
                "",
                str(sum(r.failures for r in requests)),
            )
        )
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        first = line[0].ljust(widths[0])
        return "  ".join([first, *(cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True))])

    yield fmt(head)
    yield "  ".join("-" * w for w in widths)
    for i, line in enumerate(body):
        if total is not None and i == len(body) - 1:
            yield "  ".join("-" * w for w in widths)
        yield fmt(line)


def invoice_statuses(databases: Databases) -> tuple[dict[str, int], int]:
    """What the CEF API holds: invoices by status, and lines stored."""
    import psycopg

    url = databases.admin.set(drivername="postgresql", database=databases.names["cef-api"])
    with psycopg.connect(url.render_as_string(hide_password=False), connect_timeout=5) as conn:
        statuses = conn.execute("SELECT status, count(*) FROM invoice GROUP BY status").fetchall()
        lines = conn.execute("SELECT count(*) FROM invoice_line").fetchone()
    return {str(status): int(count) for status, count in statuses}, int(lines[0]) if lines else 0


def drain(databases: Databases, stack: Stack) -> dict[str, int]:
    """Waits until every submitted invoice has been validated (or DRAIN_TIMEOUT passes), so that
    stopping `cef up` interrupts no validation; returns the invoices by status."""
    started = time.monotonic()
    while True:
        statuses, lines = invoice_statuses(databases)
        open_ = sum(statuses.get(s, 0) for s in OPEN_STATUSES)
        if not open_ or time.monotonic() - started > DRAIN_TIMEOUT or stack.process.poll() is not None:
            break
        time.sleep(1)
    said = ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())) or "none"
    print(
        f"after the run: invoices {said}; {lines} lines stored "
        f"({time.monotonic() - started:.0f} s to validate those still open when locust stopped)",
        flush=True,
    )
    return statuses


def exceptions(out: Path) -> list[tuple[int, str]]:
    """Errors raised in the users' own code (locust counts them apart from failed requests): a bug
    of the locustfile, or an answer it could not read."""
    path = out / "soak_exceptions.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [(int(r["Count"]), r["Message"]) for r in csv.DictReader(f)]


def failures(out: Path, limit: int = 10) -> Iterator[str]:
    path = out / "soak_failures.csv"
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f)):
            if i == limit:
                yield f"  … more in {path}"
                return
            yield f"  {r['Occurrences']} × {r['Method']} {r['Name']}: {r['Error'][:300]}"


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=duration_seconds, default="5m", help="e.g. 60s, 5m (default 5m)")
    parser.add_argument("--providers", type=int, default=20, help="provider users submitting invoices")
    parser.add_argument("--staff", type=int, default=6, help="CEF staff users deciding lines")
    parser.add_argument("--finance", type=int, default=3, help="finance users reading approved invoices")
    parser.add_argument("--lines", type=int, default=100, help="lines per invoice")
    parser.add_argument("--patients", type=int, default=20_000, help="patients of the generated world")
    parser.add_argument("--seed", type=int, default=1, help="the generated world's seed")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="users started per second")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("CEF_SOAK_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL database on the server that may CREATE DATABASE (CEF_SOAK_ADMIN_URL)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "soak", help="reports")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the data directory")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("soak*"):
        old.unlink()
    databases = Databases(args.admin_url)
    data_dir = Path(tempfile.mkdtemp(prefix="cef-soak-"))
    databases.create()
    print(f"databases: {', '.join(databases.names.values())}", flush=True)
    stack: Stack | None = None
    locust_rc = 1
    stack_rc = 0
    unfinished = 0
    try:
        started = time.perf_counter()
        stack = start_stack(data_dir, databases, args.out / "cef-up.log")
        print(f"cef up: ready in {time.perf_counter() - started:.1f} s ({stack.api_url})", flush=True)
        load_world(stack, args.seed, args.patients)
        locust_rc = run_locust(stack, args, args.out)
        if stack.process.poll() is not None:
            print(f"`cef up` stopped during the run; its output is in {stack.log}", flush=True)
            stack_rc = 1
        statuses = drain(databases, stack)
        unfinished = sum(statuses.get(s, 0) for s in ("failed", *OPEN_STATUSES))
    finally:
        if stack is not None:
            stopped = stop_stack_process(stack.process)
            stack_rc = stack_rc or (1 if stopped not in (0, -signal.SIGINT) else 0)
        if args.keep:
            print(f"kept: data directory {data_dir}; databases {', '.join(databases.names.values())}")
        else:
            databases.drop()
            shutil.rmtree(data_dir, ignore_errors=True)

    stats = args.out / "soak_stats.csv"
    if not stats.is_file():
        print(f"locust wrote no statistics (exit {locust_rc}); its log is {args.out / 'locust.log'}:")
        print(tail(args.out / "locust.log"))
        return 1
    rows, total = read_stats(stats)
    print()
    for line in table(rows, total):
        print(line)
    failed = sum(row.failures for row in rows)
    print(f"\nreports: {args.out}/ (soak.html, soak_*.csv, locust.log, cef-up.log)")
    if failed:
        print(f"\n{failed} request(s) or invoice(s) failed (the goal is 0):")
        for line in failures(args.out):
            print(line)
    raised = exceptions(args.out)
    if raised:
        print(
            f"\n{sum(n for n, _ in raised)} error(s) in the users' own code (locust.log has the tracebacks):"
        )
        for count, message in raised[:10]:
            print(f"  {count} × {message[:300]}")
    if unfinished:
        print(f"\n{unfinished} invoice(s) failed validation or were not validated in time (see above)")
    if stack_rc:
        print(f"`cef up` did not stop cleanly; see {args.out / 'cef-up.log'}")
    return 1 if failed or raised or unfinished or stack_rc or locust_rc not in (0, 1) else 0


if __name__ == "__main__":
    sys.exit(main())
