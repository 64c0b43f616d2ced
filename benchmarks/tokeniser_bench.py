"""Tokeniser throughput over HTTP against a bare hmac loop in one process, and peak memory.

Starts the tokeniser as its own uvicorn process on a free port, with a fresh database (SQLite
under a temporary data directory, or --database-url), and sends batches of distinct NHS numbers:
the first time they are seen (tokens issued, originals sealed and stored) and again (already
seen). The same values then go through a bare `hmac.new(key, value, sha256)` loop in this
process. Prints tokens per second for each, the ratio HTTP / bare loop, and peak RSS.

    .venv/bin/python benchmarks/tokeniser_bench.py [--values 100000] [--repeats 5] [--database-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from cef_common import db
from cef_common.auth import ensure_dev_issuer
from cef_common.testing import free_port
from cef_tokeniser.main import MIGRATIONS

GOAL_RATIO = 0.5


def nhs_numbers(count: int, seed: int) -> list[str]:
    """`count` distinct valid NHS numbers from the 999 range (never issued to real people)."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        body = "999" + f"{rng.randrange(10**6):06d}"
        total = sum(int(d) * w for d, w in zip(body, range(10, 1, -1), strict=True))
        check = 11 - total % 11
        if check == 11:
            check = 0
        if check != 10:
            out.add(body + str(check))
    return sorted(out, key=lambda _: rng.random())


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def bare_loop(values: list[str], key: bytes) -> float:
    """Time of a plain HMAC-SHA-256 loop over the values (what 'tokenising' costs at least)."""
    started = time.perf_counter()
    digests = [hmac.new(key, v.encode(), hashlib.sha256).digest() for v in values]
    elapsed = time.perf_counter() - started
    assert len(digests) == len(values)
    return elapsed


def post_batch(client: httpx.Client, values: list[str]) -> float:
    started = time.perf_counter()
    body = orjson.dumps({"kind": "nhs_number", "values": values})
    response = client.post("/v1/tokenise", content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    data = orjson.loads(response.content)
    elapsed = time.perf_counter() - started
    if len(data["tokens"]) != len(values) or data["errors"]:
        raise SystemExit(f"unexpected answer: {len(data['tokens'])} tokens, {len(data['errors'])} errors")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=100_000, help="values per batch")
    parser.add_argument("--repeats", type=int, default=5, help="already-seen batches (best is kept)")
    parser.add_argument("--fresh-batches", type=int, default=3, help="batches of values never seen before")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default SQLite)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cef-tok-bench-") as tmp:
        data_dir = Path(tmp)
        url = args.database_url or f"sqlite:///{data_dir / 'tokeniser.db'}"
        db.upgrade(MIGRATIONS, url)
        keys = data_dir / "keys"
        issuer = ensure_dev_issuer(keys)
        token = issuer.mint(
            sub="bench", audience="tokeniser", scopes=["tokenise"], ttl_seconds=3600, client="cef-api"
        )
        port = free_port()
        env = {
            **os.environ,
            "CEF_TOKENISER_DATA_DIR": str(data_dir),
            "CEF_TOKENISER_DATABASE_URL": url,
            "CEF_TOKENISER_DEV_ISSUER_ENABLED": "true",
            "CEF_TOKENISER_MASTER_KEY": secrets.token_hex(32),
            "CEF_TOKENISER_AUDIT_URL": f"http://127.0.0.1:{free_port()}",
            "CEF_TOKENISER_LOG_LEVEL": "WARNING",
        }
        env.pop("CEF_TOKENISER_MASTER_KEY_FILE", None)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "cef_tokeniser.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the tokeniser did not start")
                time.sleep(0.2)

            batches = [nhs_numbers(args.values, seed) for seed in range(args.fresh_batches)]
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, timeout=300, headers=auth) as client:
                post_batch(client, nhs_numbers(1000, 999))  # warm up: key version 1, connections
                # Bare loops interleaved with the HTTP batches, so both see the same machine load.
                bare_key = secrets.token_bytes(32)
                bare_times: list[float] = []
                fresh_times: list[float] = []
                for batch in batches:
                    fresh_times.append(post_batch(client, batch))
                    bare_times.append(bare_loop(batches[0], bare_key))
                seen_times: list[float] = []
                for _ in range(args.repeats):
                    seen_times.append(post_batch(client, batches[0]))
                    bare_times.append(bare_loop(batches[0], bare_key))
            server_rss = peak_rss_kib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=15)

        bare = min(bare_times)
        n = len(batches[0])
        fresh_rate = n / min(fresh_times)
        seen_rate = n / min(seen_times)
        bare_rate = n / bare
        database = "PostgreSQL" if args.database_url else "SQLite"
        print(f"tokeniser over HTTP, {n:,} NHS numbers per batch, {database}")
        print(
            f"  first time seen : {fresh_rate:>12,.0f} tokens/s  (best of {len(fresh_times)}, "
            f"median {n / sorted(fresh_times)[len(fresh_times) // 2]:,.0f})"
        )
        print(
            f"  already seen    : {seen_rate:>12,.0f} tokens/s  (best of {len(seen_times)}, "
            f"median {n / sorted(seen_times)[len(seen_times) // 2]:,.0f})"
        )
        print(
            f"  bare hmac loop  : {bare_rate:>12,.0f} tokens/s  "
            f"(hmac.new(key, value, sha256) in one process, best of {len(bare_times)})"
        )
        ratio_seen = seen_rate / bare_rate
        ratio_fresh = fresh_rate / bare_rate
        print(f"  ratio already seen / bare : {ratio_seen:.2f}  (goal >= {GOAL_RATIO})")
        print(f"  ratio first seen / bare   : {ratio_fresh:.2f}")
        print(
            f"  peak RSS: tokeniser {server_rss / 1024:.0f} MiB, "
            f"benchmark client {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
