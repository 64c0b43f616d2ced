"""The token service without HTTP: the stored-token cache, concurrency, and failures of the store."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from cef_common import db
from cef_common.auth import Principal
from cef_tokeniser.crypto import MasterKey
from cef_tokeniser.keys import KeyRing
from cef_tokeniser.tokens.exceptions import AuditUnavailable, StoreUnavailable
from cef_tokeniser.tokens.service import StoredTokenCache, TokenService

CALLER = Principal(sub="svc", issuer="cef-dev", scopes=frozenset({"tokenise", "detokenise"}), client="tests")
NHS = ["9999083013", "9999099602", "9992199350", "9992319488"]


@pytest.fixture
def service(db_url: str, master_key_hex: str) -> Any:
    engine = db.make_engine(db_url)
    yield TokenService(
        engine=engine,
        keyring=KeyRing(engine, MasterKey.from_hex(master_key_hex)),
        cache=StoredTokenCache(1000),
    )
    engine.dispose()


def _stored(service: TokenService) -> int:
    with service.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM token_original")).scalar_one())


def test_cache_is_bounded_and_holds_tokens_per_context() -> None:
    cache = StoredTokenCache(5)
    cache.add("cef", ["a", "b", "c"])
    assert cache.missing("cef", ["a", "x", "c"]) == [1]
    assert cache.missing("research", ["a"]) == [0]
    cache.add("research", ["d", "e", "f"])  # over the bound: starts again
    assert cache.missing("cef", ["a"]) == [0]
    assert cache.missing("research", ["d", "e", "f"]) == []
    StoredTokenCache(0).add("cef", ["a"])


def test_concurrent_batches_of_the_same_values_store_each_once(service: TokenService) -> None:
    values = [f"{n}" for n in NHS] * 50
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(
                service.tokenise(
                    kind="nhs_number", context="cef", values=values, key_version=None, principal=CALLER
                )
            )
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({tuple(r.tokens) for r in results}) == 1
    assert _stored(service) == len(NHS)
    assert sum(r.new_originals for r in results) == len(NHS)


def test_a_failing_store_issues_nothing(service: TokenService) -> None:
    service.tokenise(kind="postcode", context="cef", values=["TS18 1HU"], key_version=None, principal=CALLER)
    with service.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE token_original"))
    with pytest.raises(StoreUnavailable):
        service.tokenise(
            kind="postcode", context="cef", values=["LS1 4AP"], key_version=None, principal=CALLER
        )
    # Re-identification cannot read its store: refused, and the failure is audited.
    with pytest.raises(StoreUnavailable):
        service.detokenise(
            kind="postcode",
            context="cef",
            tokens=["P1.AAAAAAAAAAAAAAAAAAAAAAAA"],
            purpose="p",
            principal=CALLER,
        )
    with service.engine.connect() as conn:
        payloads = conn.execute(sa.text("SELECT payload FROM audit_outbox")).scalars().all()
    assert any('"outcome":"failure"' in p and "patient.detokenise" in p for p in payloads)


def test_record_refuses_when_the_outbox_is_gone(service: TokenService) -> None:
    from cef_tokeniser.tokens.service import detokenise_event

    with service.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_outbox"))
    event = detokenise_event(
        CALLER, kind="nhs_number", context="cef", purpose="p", count=1, outcome="success"
    )
    with pytest.raises(AuditUnavailable):
        service.record(event)


def test_the_cache_only_learns_tokens_after_they_are_committed(service: TokenService) -> None:
    key = service.keyring.current("nhs_number", "cef")
    with service.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_outbox"))
    with pytest.raises(StoreUnavailable):
        service.tokenise(kind="nhs_number", context="cef", values=NHS, key_version=None, principal=CALLER)
    assert _stored(service) == 0
    assert service.cache.missing("cef", key.tokens(NHS)) == list(range(len(NHS)))


def test_keys_that_cannot_be_created_refuse_the_batch(service: TokenService) -> None:
    with service.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_outbox"))  # a key version is created with its audit event
    with pytest.raises(StoreUnavailable, match="keys"):
        service.tokenise(kind="nhs_number", context="cef", values=NHS, key_version=None, principal=CALLER)
    assert service.keyring.current_version("nhs_number", "cef") is None
