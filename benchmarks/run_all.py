"""`make bench`: runs every benchmark in this folder in turn and prints their figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "engine_bench.py",
    "tokeniser_bench.py",
    "audit_bench.py",
    "storage_floor.py",
    "export_bench.py",
    "cef_api_bench.py",
    "reference_scale_bench.py",
]


def main() -> int:
    failed = []
    for name in ORDER:
        script = HERE / name
        if not script.exists():
            print(f"== {name}: missing", flush=True)
            failed.append(name)
            continue
        print(f"\n== {name}", flush=True)
        started = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
        print(f"== {name}: exit {rc} after {time.perf_counter() - started:.1f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
