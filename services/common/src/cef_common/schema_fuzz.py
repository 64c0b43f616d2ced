"""Schema fuzzing of a service in process: every documented operation, called by callers of every role.

schemathesis generates requests from the service's own OpenAPI document, valid ones and invalid
ones, and each answer must be no server error (5xx) and keep to what the document says of it: a
documented status code, a documented content type, a body that conforms to the documented schema.
Each example is sent with one role's token (or none, or a garbage one): roles that the operation
authorises are drawn more than half of the time, so that most examples reach past authorisation.
Requests go in process through schemathesis' own ASGI client, which runs the app's lifespan.

The run is deterministic (derandomised), so the same code gives the same examples in CI;
CEF_FUZZ_EXAMPLES sets how many each operation gets (`make fuzz` runs many more than `make test`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning
from requests.structures import CaseInsensitiveDict
from schemathesis import APIOperation, Case
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]

EXAMPLES_ENV = "CEF_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 20

NO_SERVER_ERROR: tuple[CheckFunction, ...] = (not_a_server_error,)
CONFORMANCE: tuple[CheckFunction, ...] = (
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)
ALL_CHECKS = NO_SERVER_ERROR + CONFORMANCE


CHECKS_ENV = "CEF_FUZZ_CHECKS"


def gate() -> tuple[CheckFunction, ...]:
    """The checks every answer must pass: all of them, or only "no 5xx" when CEF_FUZZ_CHECKS is
    `server-errors` (to look for crashes alone while a document is being rewritten)."""
    return NO_SERVER_ERROR if os.environ.get(CHECKS_ENV) == "server-errors" else ALL_CHECKS


def examples_per_operation() -> int:
    """How many examples each operation gets: CEF_FUZZ_EXAMPLES, else a number small enough for
    `make test`."""
    raw = os.environ.get(EXAMPLES_ENV, "")
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else DEFAULT_EXAMPLES


def database_kinds() -> tuple[str, ...]:
    """The databases a run fuzzes over: PostgreSQL (production's, and the stricter: no NUL in text,
    INTEGER columns of 32 bits) in `make test`; SQLite too when more examples are asked for."""
    return ("postgresql",) if examples_per_operation() <= DEFAULT_EXAMPLES else ("sqlite", "postgresql")


def fuzz_settings(max_examples: int | None = None) -> settings:
    """Hypothesis settings of a fuzz run: derandomised (the same examples on every run), no example
    database, no deadline (in-process calls share two cores with the rest of the suite)."""
    return settings(
        max_examples=max_examples or examples_per_operation(),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        print_blob=True,
    )


@dataclass
class Caller:
    """A role's Authorization header (empty: no token)."""

    name: str
    headers: dict[str, str]


GARBAGE = Caller("garbage-token", {"Authorization": "Bearer not.a.token"})
ANONYMOUS = Caller("no-token", {})


@dataclass
class FuzzTarget:
    """A service app to fuzz, the callers to send, and which of them each operation authorises."""

    app: Any
    callers: Sequence[Caller]
    # The callers an operation lets through authorisation (by name); the rest are drawn less often.
    authorised: Callable[[Operation], Sequence[str]] = lambda _op: ()
    # Fixed path parameter values (e.g. the id of an invoice the fixture made), tried alongside
    # generated ones so that examples also reach past "not found".
    known_path_values: Mapping[str, Sequence[str]] = field(default_factory=dict)
    checks: Sequence[CheckFunction] = field(default_factory=gate)


@contextmanager
def loaded_schema(app: Any) -> Iterator[schemathesis.BaseSchema]:
    """The app's OpenAPI document as schemathesis reads it; the app's lifespan runs (in
    schemathesis' ASGI client) until the block ends, so its engine is closed before the test's
    database is dropped."""
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        asgi.shutdown_lifespans()


def _case_strategy(operation: Operation, known: Mapping[str, Sequence[str]]) -> st.SearchStrategy[AnyCase]:
    strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    names = {p.name for p in operation.path_parameters}
    fixed = {name: values for name, values in known.items() if name in names and values}
    if fixed:
        strategies.append(
            st.fixed_dictionaries(
                {name: st.sampled_from(list(values)) for name, values in fixed.items()}
            ).flatmap(lambda values: operation.as_strategy(GenerationMode.POSITIVE, path_parameters=values))
        )
    return st.one_of(strategies)


def _caller_strategy(target: FuzzTarget, operation: Operation) -> st.SearchStrategy[Caller]:
    everyone = list(target.callers)
    wanted = set(target.authorised(operation))
    allowed = [c for c in everyone if c.name in wanted]
    return (
        st.one_of(st.sampled_from(allowed), st.sampled_from(everyone))
        if allowed
        else st.sampled_from(everyone)
    )


def fuzz_operation(target: FuzzTarget, operation: Operation, *, max_examples: int | None = None) -> None:
    """Sends `max_examples` generated requests to one operation; fails (after shrinking to the
    smallest example) on the first answer a check refuses."""

    @fuzz_settings(max_examples)
    @given(
        case=_case_strategy(operation, target.known_path_values), caller=_caller_strategy(target, operation)
    )
    def run(case: AnyCase, caller: Caller) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = CaseInsensitiveDict({**headers, **caller.headers})
        case.call_and_validate(checks=list(target.checks))

    with warnings.catch_warnings():
        # schemathesis draws from `random` inside its strategies; hypothesis warns of it on every run.
        warnings.simplefilter("ignore", HypothesisDeprecationWarning)
        run()


def fuzz_all(target: FuzzTarget, subtests: Any) -> list[str]:
    """Fuzzes every operation of the app's document, each as a subtest (one failing operation does
    not hide the others); returns the operations' labels."""
    labels: list[str] = []
    with loaded_schema(target.app) as schema:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operation = result.ok()
            labels.append(operation.label)
            with subtests.test(msg=operation.label):
                fuzz_operation(target, operation)
    if not labels:
        pytest.fail("the app's OpenAPI document has no operations")
    return labels
