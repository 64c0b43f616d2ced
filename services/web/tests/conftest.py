"""Fixtures of the web app's tests: one running stack (audit, tokeniser, CEF API with the demo
world) per test module, and a web app over it per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from web_support import Stack, running_stack  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("var")) as s:
        yield s


@pytest.fixture
def web(stack: Stack) -> Iterator[TestClient]:
    with stack.web() as client:
        yield client
