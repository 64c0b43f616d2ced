"""What the whole test run shares, whichever directory a test is in.

Compiled modules are cached. The machines this project runs on (CI's too) set
PYTHONDONTWRITEBYTECODE, so every Python process compiles every module it imports afresh: about
1.7 s of CPU for one service's imports, and the tests start hundreds of Python processes (each `cef
up` five, each `cef` command one, each xdist worker one) on two cores. The run writes the cache
(`__pycache__/`, ignored by git and by Docker builds), and its subprocesses, which inherit the
environment, use it.

The order in which the xdist workers are handed test files (`--dist loadfile`): the slowest files
first, so that the long ones (real processes, a real browser) overlap the many quick in-process
ones, and the run does not end on one worker alone with a file of several minutes. Only the order
changes: every test still runs, on one worker per file. xdist's own reordering (files with the most
tests first, which puts the slowest files, each of a few tests, last) is off
(`--no-loadscope-reorder` in pyproject.toml's addopts), so the order of the collected items is the
order the workers are given the files in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Seconds each slow file took (setup, calls and teardown) in a `make test` run on the 2-core CI
# machine, roughly. A file not listed counts as quick and keeps its collected place after these.
# Update when a file becomes much slower or quicker; a wrong figure only costs some balance.
SLOW_FILES: dict[str, float] = {
    "tests/test_up_newcomer.py": 270,
    "tests/test_e2e_up.py": 210,
    "tests/browser/test_journey.py": 195,
    "tests/test_replicas.py": 155,
    "tests/test_e2e_lifecycle.py": 150,
    "tests/test_fault_killed_mid_validation.py": 95,
    "tests/browser/test_pages.py": 95,
    "tests/test_faults.py": 80,
    "services/audit/tests/test_schema_fuzz.py": 70,
    "tests/test_identifier_sweep.py": 65,
    "tests/test_e2e_reidentify.py": 65,
    "services/cef-api/tests/validation/test_oracle_differential.py": 57,
    "services/cef-api/tests/test_schema_fuzz.py": 56,
    "services/cef-api/tests/invoices/test_paging_params.py": 49,
    "services/cef-api/tests/workflow/test_challenges.py": 42,
    "services/cef-api/tests/invoices/test_workers.py": 40,
    "tests/test_sample_replay.py": 38,
    "tests/test_no_identifiers_in_logs.py": 30,
    "tests/test_openapi_clients.py": 29,
    "tests/test_postgres_restart.py": 27,
    "services/cef-api/tests/invoices/test_background_jobs.py": 26,
    "services/cef-api/tests/workflow/test_queue.py": 25,
    "services/cef-api/tests/invoices/test_lifecycle.py": 23,
    "services/cef-api/tests/invoices/test_submission.py": 22,
    "services/cef-api/tests/exports/test_line_exports.py": 19,
}


def pytest_configure(config: pytest.Config) -> None:
    # Before xdist starts its workers and before any test starts a process: they inherit it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


def _weight(item: pytest.Item) -> float:
    try:
        relative = item.path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return 0.0
    return SLOW_FILES.get(relative, 0.0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: the tests of one file stay together and in their own order.
    items.sort(key=lambda item: -_weight(item))
