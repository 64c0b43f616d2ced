"""Reference data at population scale: a commissioner's registered population loaded through the real
services, then reloaded a month later with a few rows changed.

Writes a world of `--patients` patients (1,000,000) with `--registrations` registrations
(1,500,000), the real ODS epraccur extract (../shared/data/reference, else the demo's subset),
postcode districts, a tariff and providers; starts `cef up` on free ports and a temporary data
directory (SQLite, the embedded default; then with every service on a scratch PostgreSQL database
unless `--database-url ''`), and loads every file through `PUT /v1/reference/{dataset}`, as
`cef reference load` does. Then it changes `--change` (2%) of the patients and registrations
(a moved patient's postcode, an ended registration, patients who left and joined) and loads the
whole directory again. Prints each file's seconds, the whole load's and the reload's, and the peak
RSS (VmHWM) of the CEF API and the tokeniser during each, against the goals (60 s, 15 s, 1 GiB).

    .venv/bin/python benchmarks/reference_scale_bench.py [--patients 1000000]
        [--registrations 1500000] [--change 0.02] [--database-url postgresql://…] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cef_api_bench  # noqa: E402
import generate_world  # noqa: E402
import storage_floor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOAD_GOAL_SECONDS = 60.0
RELOAD_GOAL_SECONDS = 15.0
MEMORY_GOAL_MIB = 1024.0
# What a database-backed run points every service at (each gets its own scratch database).
DATABASE_SETTINGS = {"tokeniser": "CEF_TOKENISER", "cef-api": "CEF_API", "audit": "CEF_AUDIT"}
MEASURED = ("cef-api", "tokeniser")
PREFIXES = {"tokeniser": "CEF_TOKENISER", "cef-api": "CEF_API", "audit": "CEF_AUDIT", "web": "CEF_WEB"}
# Synthetic postcode districts: letters no real district starts with twice, and 1 to 20.
DISTRICT_LETTERS = ("QA", "QB", "QC", "QD", "QE", "QF", "QG", "QH", "QJ", "QK", "XA", "XB", "XC")


@dataclass(frozen=True)
class Population:
    """Who is registered where: enough to write the trace and the registrations twice."""

    size: int
    registrations: int
    practices: list[str]
    districts: list[str]
    seed: int


def valid_nhs_numbers(count: int) -> Iterator[str]:
    """`count` distinct NHS numbers passing the Modulus 11 check (never a real allocation pattern)."""
    made, base = 0, 600_000_000
    while made < count:
        nine = f"{base:09d}"
        base += 1
        check = generate_world.nhs_check_digit(nine)
        if check is None:
            continue
        made += 1
        yield f"{nine}{check}"


def write_rows(path: Path, header: list[str], rows: Iterator[list[str]]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def changed(index: int, share: float, month: int) -> bool:
    """Whether row `index` changes in reload `month` (a fixed spread of `share` of the rows)."""
    return month > 0 and (index * 2_654_435_761 + month) % 10_000 < share * 10_000


def write_people(out: Path, pop: Population, *, month: int, share: float) -> dict[str, int]:
    """patients.csv and registrations.csv of `month` (0: the first load); `share` of each changes later."""
    rng = random.Random(pop.seed)
    first = date(1930, 1, 1)
    births = [(first + timedelta(days=d)).isoformat() for d in range(0, 90 * 365, 3)]
    starts = [(date(2005, 1, 1) + timedelta(days=d)).isoformat() for d in range(0, 15 * 365, 7)]
    second = pop.registrations - pop.size  # patients with an earlier, ended registration too
    patients: list[list[str]] = []
    registrations: list[list[str]] = []
    # In a reload, 1 in 4 of the changed patients left, 1 moved, 1 ended a registration and 1 had
    # a date of birth corrected; as many joined.
    for i, number in enumerate(valid_nhs_numbers(pop.size + (pop.size // 100 if month else 0))):
        if i >= pop.size:
            # Joined since the first load (in the place of those who left).
            if changed(i, 0.5, month):
                patients.append([number, rng.choice(births), f"{rng.choice(pop.districts)} 1AB"])
                registrations.append([number, rng.choice(pop.practices), "2026-11-01", ""])
            continue
        moved = changed(i, share, month)
        if moved and i % 4 == 0:
            continue  # left the population: neither in the trace nor registered
        district = pop.districts[(i * 7 if not moved or i % 4 != 1 else i * 11) % len(pop.districts)]
        inward = f"{i % 9 + 1}{'ABDEFGHJLNPQRSTUWXYZ'[i % 20]}{'ABDEFGHJLNPQRSTUWXYZ'[i // 20 % 20]}"
        born = births[(i * (37 if moved and i % 4 == 3 else 31)) % len(births)]  # 3: a corrected date
        patients.append([number, born, f"{district} {inward}"])
        practice = pop.practices[(i * 13) % len(pop.practices)]
        since = starts[(i * 17) % len(starts)]
        if i < second:
            earlier = pop.practices[(i * 29 + 1) % len(pop.practices)]
            registrations.append([number, earlier, "2000-01-01", "2004-12-31"])
        ended = "2026-10-31" if moved and i % 4 == 2 else ""
        registrations.append([number, practice, since, ended])
    counts = {
        "patients": write_rows(
            out / "patients.csv", ["nhs_number", "date_of_birth", "postcode"], iter(patients)
        ),
        "registrations": write_rows(
            out / "registrations.csv",
            ["nhs_number", "gp_practice_code", "registered_from", "registered_to"],
            iter(registrations),
        ),
    }
    return counts


def write_world(out: Path, patients: int, registrations: int, seed: int) -> tuple[Population, dict[str, int]]:
    """Every reference file of the first load; the population, to write the reload's from."""
    out.mkdir(parents=True, exist_ok=True)
    epraccur = generate_world.default_epraccur()
    if generate_world.SHARED_EPRACCUR.is_file():
        epraccur = generate_world.SHARED_EPRACCUR.read_bytes()
    (out / "epraccur.csv").write_bytes(epraccur)
    practices, commissioners = [], set()
    for row in csv.reader(io.StringIO(epraccur.decode("latin-1"))):
        if len(row) >= 27 and row[14]:
            commissioners.add(row[14])
            if row[12] == "A":
                practices.append(row[0])
    codes = sorted(commissioners)
    districts = [f"{letters}{n}" for letters in DISTRICT_LETTERS for n in range(1, 21)]
    rng = random.Random(seed)
    counts = {
        "gp-practices": len(epraccur.splitlines()),
        "postcode-districts": write_rows(
            out / "postcode_districts.csv",
            ["postcode_district", "commissioner_code"],
            ([d, codes[i % len(codes)]] for i, d in enumerate(districts)),
        ),
    }
    tariff = generate_world._tariff(rng, 1_500)
    counts["tariff"] = write_rows(
        out / "tariff.csv",
        ["hrg_code", "hrg_name", "point_of_delivery", "price", "trim_point_days", "excess_bed_day_price"],
        (
            [
                t.hrg_code,
                t.name,
                t.point_of_delivery,
                str(t.price),
                str(t.trim_point_days) if t.point_of_delivery in generate_world.SPELLS else "",
                str(t.excess_bed_day_price) if t.point_of_delivery in generate_world.SPELLS else "",
            ]
            for t in tariff
        ),
    )
    counts["providers"] = write_rows(
        out / "providers.csv",
        ["provider_code", "name", "market_forces_factor"],
        ([f"R{n:02d}", f"Synthetic trust {n}", f"{0.95 + n % 20 / 100:.3f}"] for n in range(100)),
    )
    pop = Population(patients, registrations, sorted(practices), districts, seed)
    counts.update(write_people(out, pop, month=0, share=0.0))
    return pop, counts


def load_directory(client: httpx.Client, token: str, directory: Path) -> tuple[float, list[str]]:
    """Every file through the API in `cef reference load`'s order; the seconds and a line per file."""
    from cef_api.reference.parsers import FILENAMES, LOAD_ORDER

    lines: list[str] = []
    started = time.perf_counter()
    for dataset in LOAD_ORDER:
        path = directory / FILENAMES[dataset]
        if not path.is_file():
            continue
        began = time.perf_counter()
        with path.open("rb") as body:
            r = client.put(
                f"/v1/reference/{dataset}",
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
            )
        if r.status_code != 200:
            raise SystemExit(f"{dataset} refused: {r.status_code} {r.text[:500]}")
        got = r.json()
        lines.append(
            f"    {dataset:<20} {got['rows']:>10,} rows  {time.perf_counter() - began:6.1f} s  "
            f"(version {got['version']})"
        )
    return time.perf_counter() - started, lines


def start_services(
    work: Path, databases: dict[str, str]
) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    data_dir = work / "var"
    empty = work / "no-seed"
    empty.mkdir(parents=True, exist_ok=True)
    ports = {name: cef_api_bench.free_port() for name in ("tokeniser", "cef-api", "audit", "web")}
    env = {
        **os.environ,
        "UV_PYTHON_DOWNLOADS": "never",
        "CEF_API_LOG_LEVEL": "WARNING",
        "CEF_TOKENISER_LOG_LEVEL": "WARNING",
        "CEF_AUDIT_LOG_LEVEL": "WARNING",
        "CEF_WEB_LOG_LEVEL": "WARNING",
        # A first load, not a reload over the demo world.
        "CEF_API_SEED_REFERENCE_DIR": str(empty),
    }
    for name, port in ports.items():
        env[f"{PREFIXES[name]}_PORT"] = str(port)
        # No metrics listeners: their fixed ports may be taken by another run on this machine.
        env[f"{PREFIXES[name]}_METRICS_PORT"] = "0"
    for name, url in databases.items():
        env[f"{DATABASE_SETTINGS[name]}_DATABASE_URL"] = url
    log = (work / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "cef_cli.main", "up", "--data-dir", str(data_dir)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        if up.poll() is not None:
            raise SystemExit(f"`cef up` exited: see {work / 'up.log'}")
        try:
            if all(
                httpx.get(f"http://127.0.0.1:{ports[p]}/readyz", timeout=1).status_code == 200
                for p in ("tokeniser", "cef-api", "audit")
            ):
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(up)
            raise SystemExit("services not ready in 180 s")
        time.sleep(0.5)
    return up, ports, data_dir


def stop(up: subprocess.Popen[bytes]) -> None:
    os.killpg(up.pid, signal.SIGINT)
    try:
        up.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)


def peaks(pids: dict[str, int]) -> dict[str, float]:
    return {name: cef_api_bench.peak_rss_mib(pids[name]) for name in MEASURED if name in pids}


def cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the measured processes: steadier than the wall clock on a shared machine."""
    return {name: cef_api_bench.cpu_seconds(pids[name]) for name in MEASURED if name in pids}


def spent(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{name} {after[name] - before[name]:.1f} s" for name in after)


def run(
    label: str, work: Path, files: Path, pop: Population, share: float, databases: dict[str, str]
) -> None:
    from cef_common.auth import mint_dev_token

    up, ports, data_dir = start_services(work, databases)
    try:
        pids = cef_api_bench.service_pids(up.pid)
        for pid in pids.values():
            cef_api_bench.reset_peak_rss(pid)
        admin = mint_dev_token(
            data_dir / "keys", scopes=["reference:write"], audience="cef-api", sub="reference-bench"
        )
        api = f"http://127.0.0.1:{ports['cef-api']}"
        with httpx.Client(base_url=api, timeout=httpx.Timeout(1800, connect=5)) as client:
            cpu_before = cpu(pids)
            seconds, lines = load_directory(client, admin, files)
            load_rss, load_cpu = peaks(pids), spent(cpu_before, cpu(pids))
            for pid in pids.values():
                cef_api_bench.reset_peak_rss(pid)
            counts = write_people(files, pop, month=1, share=share)
            cpu_before = cpu(pids)
            reload_seconds, reload_lines = load_directory(client, admin, files)
            reload_rss, reload_cpu = peaks(pids), spent(cpu_before, cpu(pids))
        write_people(files, pop, month=0, share=0.0)  # the next run loads the first month again
    finally:
        stop(up)
    verdict = "within" if seconds <= LOAD_GOAL_SECONDS else "OVER"
    print(f"{label}: first load {seconds:6.1f} s ({verdict} the goal of {LOAD_GOAL_SECONDS:.0f} s)")
    print("\n".join(lines))
    for name, mib in load_rss.items():
        print(f"    peak RSS {name:<10} {mib:6.0f} MiB")
    total = sum(load_rss.values())
    print(f"    peak RSS together   {total:6.0f} MiB (goal ≤ {MEMORY_GOAL_MIB:.0f} MiB)")
    print(f"    CPU: {load_cpu}")
    verdict = "within" if reload_seconds <= RELOAD_GOAL_SECONDS else "OVER"
    print(
        f"{label}: reload with {share:.0%} of the people changed ({counts['patients']:,} patients, "
        f"{counts['registrations']:,} registrations) {reload_seconds:6.1f} s "
        f"({verdict} the goal of {RELOAD_GOAL_SECONDS:.0f} s)"
    )
    print("\n".join(reload_lines))
    for name, mib in reload_rss.items():
        print(f"    peak RSS {name:<10} {mib:6.0f} MiB")
    print(f"    CPU: {reload_cpu}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--registrations", type=int, default=1_500_000)
    parser.add_argument(
        "--change", type=float, default=0.02, help="share of the people changed by the reload"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CEF_BENCH_POSTGRES_URL", storage_floor.LOCAL_POSTGRES),
        help="a PostgreSQL server where scratch databases may be created and dropped ('' to skip)",
    )
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.registrations < args.patients:
        parser.error("--registrations must be at least --patients (everyone is registered somewhere)")
    work = Path(tempfile.mkdtemp(prefix="cef-reference-bench-"))
    try:
        started = time.perf_counter()
        files = work / "reference"
        pop, counts = write_world(files, args.patients, args.registrations, args.seed)
        print(
            f"world written in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{name} {n:,}" for name, n in counts.items()),
            flush=True,
        )
        if args.sqlite:
            run("SQLite", work / "sqlite", files, pop, args.change, {})
        if args.database_url:
            run_postgres(args.database_url, work / "postgres", files, pop, args.change)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run_postgres(server: str, work: Path, files: Path, pop: Population, share: float) -> None:
    import sqlalchemy as sa

    from cef_common import db

    admin_url = sa.make_url(db.normalise_url(server))
    names = {
        name: f"cef_refbench_{name.replace('-', '_')}_{uuid.uuid4().hex[:6]}" for name in DATABASE_SETTINGS
    }
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for scratch in names.values():
                connection.execute(sa.text(f'CREATE DATABASE "{scratch}"'))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL: skipped, no server at {admin_url.render_as_string()} ({type(exc).__name__})")
        return
    try:
        urls = {
            name: admin_url.set(database=scratch).render_as_string(hide_password=False)
            for name, scratch in names.items()
        }
        run("PostgreSQL", work, files, pop, share, urls)
    finally:
        with admin.connect() as connection:
            for scratch in names.values():
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
