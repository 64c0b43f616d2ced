"""Fixtures of the queue tests: each runner on its own database kind."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from queue_support import RUNNERS  # noqa: E402

from cef_api.main import MIGRATIONS  # noqa: E402


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def runner_db(runner: str, database_factory: Any) -> str:
    return str(database_factory(RUNNERS[runner], MIGRATIONS))
