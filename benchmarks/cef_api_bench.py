"""End-to-end benchmark of invoice validation: a generated world and a 1,000,000-line backing file
through the real API of the three services, each its own process (`cef up` on free ports and a
temporary data directory), to `validated`.

Prints lines per second end to end, each service's peak RSS (VmHWM), the time to load the
reference data, and beside them the time merely to parse the same CSV in one process.

    .venv/bin/python benchmarks/cef_api_bench.py [--lines 1000000] [--patients 100000] [--keep]

The file's EL/NEL lines are spells (most with a discharge date), so the run also measures the
pathway checks (14, 15) and their look-back index; the figures are printed against the last ones
measured before those checks (docs/cef-api.md, "Benchmark"), whose goal is at most 1.25x of each,
or against `--before SECONDS MIB`: this machine's load varies, so measure the commit before the
checks just before (`git archive` it elsewhere, run its own copy of this script with PYTHONPATH on
its services' and cli's src) and pass its figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate_world  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# End to end and the peak RSS of the service with its workers, before checks 14 and 15 (2026-12-03).
BEFORE_PATHWAY_SECONDS = 22.1
BEFORE_PATHWAY_MIB = 938.0
PATHWAY_GOAL = 1.25
SERVICES = {"tokeniser": "CEF_TOKENISER", "cef-api": "CEF_API", "audit": "CEF_AUDIT"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def service_pids(root: int) -> dict[str, int]:
    """The uvicorn process of each service under `cef up` (found by the module it serves)."""
    found: dict[str, int] = {}
    modules = {"cef_tokeniser.main": "tokeniser", "cef_api.main": "cef-api", "cef_audit.main": "audit"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text().split()
        except OSError:
            continue
        for module, name in modules.items():
            if f"{module}:create_app" in cmdline and "uvicorn" in cmdline and _descends(int(stat[3]), root):
                found[name] = int(entry.name)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its reaped children excluded)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # not permitted here: the peaks printed are then over the whole run


def children(pid: int) -> list[int]:
    """The direct children of `pid` (the cef-api's validation worker processes, among others)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _descends(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().split()[3])
        except OSError:
            return False
    return False


def stored_spells(data_dir: Path) -> int:
    """Rows of the pathway checks' look-back index in the service's SQLite database (-1: none found)."""
    import sqlite3

    for path in data_dir.rglob("cef-api*.db"):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return int(conn.execute("SELECT count(*) FROM invoice_spell").fetchone()[0])
        except sqlite3.Error:
            continue
    return -1


def bare_parse_seconds(path: Path) -> float:
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8") as f:
        for _ in csv.reader(f):
            pass
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--before",
        nargs=2,
        type=float,
        metavar=("SECONDS", "MIB"),
        default=(BEFORE_PATHWAY_SECONDS, BEFORE_PATHWAY_MIB),
        help="end to end and peak RSS (service and workers) to compare with, e.g. the commit before "
        "the pathway checks measured just now on the same machine (default: the documented figures)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cef-bench-"))
    data_dir = work / "var"
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "UV_PYTHON_DOWNLOADS": "never",
        "CEF_API_LOG_LEVEL": os.environ.get("CEF_API_LOG_LEVEL", "WARNING"),
        "CEF_TOKENISER_LOG_LEVEL": "WARNING",
        "CEF_AUDIT_LOG_LEVEL": "WARNING",
    }
    for name, prefix in SERVICES.items():
        env[f"{prefix}_PORT"] = str(ports[name])
    print(f"generating a world ({args.patients} patients) and a {args.lines}-line backing file …", flush=True)
    started = time.perf_counter()
    world = generate_world.generate(seed=args.seed, patients=args.patients, invoices=0)
    header, chunks = generate_world.big_invoice(world, args.lines, seed=args.seed)
    backing = work / "backing.csv"
    with backing.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
    print(
        f"  generated in {time.perf_counter() - started:.1f} s: {backing.stat().st_size / 1e6:.1f} MB",
        flush=True,
    )

    log = (work / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "cef_cli.main", "up", "--data-dir", str(data_dir)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{ports['cef-api']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if up.poll() is not None:
                raise SystemExit(f"`cef up` exited: see {work / 'up.log'}")
            try:
                if all(
                    httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=1).status_code == 200
                    for p in ports.values()
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("services not ready in 120 s")
            time.sleep(0.5)
        from cef_common.auth import mint_dev_token

        keys = data_dir / "keys"
        admin = mint_dev_token(keys, scopes=["reference:write"], audience="cef-api", sub="bench")
        provider = mint_dev_token(
            keys, scopes=["invoices:submit"], audience="cef-api", sub="bench", org=header["provider_code"]
        )
        with httpx.Client(base_url=api, timeout=httpx.Timeout(1800, connect=5)) as client:
            started = time.perf_counter()
            for dataset, body in world.reference_files().items():
                r = client.put(
                    f"/v1/reference/{dataset}",
                    content=body,
                    headers={"Authorization": f"Bearer {admin}", "Content-Type": "text/csv"},
                )
                r.raise_for_status()
            reference_seconds = time.perf_counter() - started
            print(f"  reference data loaded in {reference_seconds:.1f} s", flush=True)
            # Peak RSS over the whole run is the reference load's, when the patients are many: note it,
            # then start the peaks again for the invoice alone (Linux: 5 > clear_refs resets VmHWM).
            load_pids = service_pids(up.pid)
            load_rss = {name: peak_rss_mib(pid) for name, pid in sorted(load_pids.items())}
            for pid in load_pids.values():
                reset_peak_rss(pid)
            cpu_before = {pid: cpu_seconds(pid) for pid in load_pids.values()}
            if "cef-api" in load_pids:  # the validation workers, started with the service
                cpu_before.update({c: cpu_seconds(c) for c in children(load_pids["cef-api"])})

            started = time.perf_counter()
            with backing.open("rb") as f:
                r = client.post(
                    "/v1/invoices",
                    files={
                        "invoice": ("invoice.json", generate_world.json_bytes(header), "application/json"),
                        "backing_data": ("backing.csv", f, "text/csv"),
                    },
                    headers={"Authorization": f"Bearer {provider}"},
                )
            if r.status_code not in (201, 202):
                raise SystemExit(f"submission refused: {r.status_code} {r.text[:500]}")
            accepted = time.perf_counter() - started
            invoice: dict[str, Any] = r.json()
            while invoice["status"] not in ("validated", "failed"):
                time.sleep(0.25)
                invoice = client.get(
                    r.headers["Location"], headers={"Authorization": f"Bearer {provider}"}
                ).json()
            elapsed = time.perf_counter() - started
        if invoice["status"] != "validated":
            raise SystemExit(f"validation failed: {invoice.get('failure_reason')}")
        pids = service_pids(up.pid)
        rss = {name: peak_rss_mib(pid) for name, pid in sorted(pids.items())}
        cpu = {name: cpu_seconds(pid) - cpu_before.get(pid, 0.0) for name, pid in sorted(pids.items())}
        if "cef-api" in pids:
            cpu["cef-api workers"] = sum(
                cpu_seconds(c) - cpu_before.get(c, 0.0) for c in children(pids["cef-api"])
            )
        workers = (
            sorted(peak_rss_mib(child) for child in children(pids["cef-api"])) if "cef-api" in pids else []
        )
        spells = stored_spells(data_dir)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
    parse = bare_parse_seconds(backing)
    s = invoice["summary"]
    print()
    print(
        f"lines                     {s['lines']:>12,}  (valid {s['valid']:,}, query {s['query']:,}, "
        f"rejected {s['rejected']:,})"
    )
    print(f"upload + checks → {r.status_code}       {accepted:>10.1f} s")
    print(f"end to end → validated    {elapsed:>10.1f} s")
    print(f"throughput                {s['lines'] / elapsed:>12,.0f} lines/s")
    print(f"bare csv parse            {parse:>10.1f} s  ({args.lines / parse:,.0f} lines/s, one process)")
    print(f"reference load            {reference_seconds:>10.1f} s  ({args.patients:,} patients)")
    for name, mib in load_rss.items():
        print(f"peak RSS {name:<12} {mib:>6.0f} MiB  while loading the reference data")
    for name, mib in rss.items():
        print(f"peak RSS {name:<12} {mib:>6.0f} MiB  while the invoice was submitted and validated")
    print(
        "CPU while the invoice was submitted and validated: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
    )
    if workers:
        print(
            f"peak RSS cef-api children {', '.join(f'{w:.0f}' for w in workers)} MiB "
            f"(validation workers and multiprocessing's resource tracker); "
            f"with the service {rss['cef-api'] + sum(workers):.0f} MiB"
        )
        before_seconds, before_mib = args.before
        ratio_time = elapsed / before_seconds
        ratio_mib = (rss["cef-api"] + sum(workers)) / before_mib
        print(
            f"against before the pathway checks ({before_seconds} s, {before_mib:.0f} MiB): "
            f"time {ratio_time:.2f}x, memory {ratio_mib:.2f}x (goal: at most {PATHWAY_GOAL}x each)"
        )
    print(f"spells stored              {spells:>12,}  (with nights, lines not rejected)")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
