"""The sequencer: no gaps or forks under concurrent writers; the database refuses edits."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from audit_test_support import make_event

from cef_audit.integrity.verify import verify_log
from cef_audit.log.records import Recorder
from cef_audit.log.sequencer import AuditLog
from cef_common.db import make_engine
from cef_common.errors import Unprocessable
from cef_common.keys import SigningKey

PRODUCER = Recorder(sub="cef-api", issuer="cef-dev", client="cef-api")


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_concurrent_writers_never_fork_the_chain(audit_db: str, key: SigningKey) -> None:
    # Several engines stand for several service processes, each with threads of its own.
    engines = [make_engine(audit_db) for _ in range(3)]
    logs = [AuditLog(e, signing_key=key, checkpoint_every=7) for e in engines]
    errors: list[BaseException] = []
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(log: AuditLog, worker: int) -> None:
        try:
            for i in range(10):
                events = [make_event(worker * 1000 + i * 10 + j) for j in range(1 + i % 3)]
                results = log.append(events, recorded_by=PRODUCER)
                with lock:
                    seqs.extend(r.seq for r in results)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(logs[w % 3], w)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = 6 * sum(1 + i % 3 for i in range(10))
    assert sorted(seqs) == list(range(1, total + 1))
    report = verify_log(engines[0], key.jwks())
    assert report.valid, report.problems
    assert report.length == total
    assert report.checkpoints_checked >= total // 9
    with engines[0].connect() as conn:
        stamps = [r[0] for r in conn.execute(sa.text("SELECT recorded_at FROM audit_events ORDER BY seq"))]
    assert stamps == sorted(stamps)
    for e in engines:
        e.dispose()


def test_a_failed_batch_leaves_no_trace(audit_db: str, key: SigningKey) -> None:
    engine = make_engine(audit_db)
    log = AuditLog(engine, signing_key=key)
    log.append([make_event(1)], recorded_by=PRODUCER)
    with pytest.raises(Unprocessable, match="safe integer"):
        log.append([make_event(2), make_event(3, detail={"x": 2**62})], recorded_by=PRODUCER)
    assert log.head().length == 1
    assert log.append([make_event(4)], recorded_by=PRODUCER)[0].seq == 2
    engine.dispose()


def test_checkpoints_every_n_events_and_on_demand(audit_db: str, key: SigningKey) -> None:
    engine = make_engine(audit_db)
    log = AuditLog(engine, signing_key=key, checkpoint_every=3)
    log.append([make_event(i) for i in range(2)], recorded_by=PRODUCER)
    assert log.checkpoint() is not None  # the timer's path: two events since none
    assert log.checkpoint() is None  # nothing new
    log.append([make_event(i) for i in range(2, 4)], recorded_by=PRODUCER)
    log.append([make_event(i) for i in range(4, 6)], recorded_by=PRODUCER)  # 6 - 2 >= 3
    with engine.connect() as conn:
        lengths = [
            r[0] for r in conn.execute(sa.text("SELECT length FROM audit_checkpoints ORDER BY length"))
        ]
    assert lengths == [2, 6]
    engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'success'",
        "DELETE FROM audit_events",
        "UPDATE audit_checkpoints SET head_hash = 'x'",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_head SET length = 0",
        "DELETE FROM audit_head",
    ],
)
def test_the_database_refuses_updates_and_deletes(audit_db: str, key: SigningKey, statement: str) -> None:
    engine = make_engine(audit_db)
    log = AuditLog(engine, signing_key=key, checkpoint_every=1)
    log.append([make_event(1)], recorded_by=PRODUCER)
    with (
        pytest.raises(sa.exc.DatabaseError, match="append-only|only moves forward|never deleted"),
        engine.begin() as conn,
    ):
        conn.execute(sa.text(statement))
    assert verify_log(engine, key.jwks()).valid
    engine.dispose()


def test_postgres_truncate_is_refused(database_factory: Any, key: SigningKey) -> None:
    from cef_audit.main import MIGRATIONS

    url = database_factory("postgresql", MIGRATIONS)
    engine = make_engine(url)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE audit_events"))
    engine.dispose()


def test_postgres_writer_role_cannot_update_or_delete(database_factory: Any, key: SigningKey) -> None:
    from cef_audit.main import MIGRATIONS

    url = database_factory("postgresql", MIGRATIONS)
    engine = make_engine(url)
    AuditLog(engine, signing_key=key, checkpoint_every=1).append([make_event(1)], recorded_by=PRODUCER)
    engine.dispose()
    libpq = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        # Even with the triggers gone, the service's role lacks the privileges.
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        conn.execute("SET ROLE cef_audit_writer")
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone() == (1,)
        for statement in (
            "UPDATE audit_events SET outcome = 'denied'",
            "DELETE FROM audit_events",
            "DELETE FROM audit_checkpoints",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("RESET ROLE")
    # …and what it may do is enough to run the service.
    engine = make_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _as_writer(dbapi_conn: Any, _: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SET ROLE cef_audit_writer")
        dbapi_conn.commit()

    log = AuditLog(engine, signing_key=key, checkpoint_every=1)
    assert log.append([make_event(2)], recorded_by=PRODUCER)[0].seq == 2
    assert verify_log(engine, key.jwks()).valid
    engine.dispose()


def test_sqlite_commits_are_synced(sqlite_db: str, key: SigningKey) -> None:
    # An acknowledged event must survive a power cut: FULL syncs the WAL at every commit.
    log = AuditLog(make_engine(sqlite_db), signing_key=key)
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    log.engine.dispose()


def test_redelivery_of_a_large_batch_finds_every_stored_event(audit_db: str, key: SigningKey) -> None:
    # More ids than one look-up takes on SQLite (chunks of 500), duplicates within the batch too.
    engine = make_engine(audit_db)
    log = AuditLog(engine, signing_key=key)
    events = [make_event(n) for n in range(1200)]
    first = log.append(events[:1100], recorded_by=PRODUCER)
    again = log.append([*events, events[1150], events[3]], recorded_by=PRODUCER)
    assert [r.seq for r in again[:1100]] == [r.seq for r in first]
    assert all(r.duplicate for r in again[:1100])
    assert [(r.seq, r.duplicate) for r in again[1100:1200]] == [(1101 + i, False) for i in range(100)]
    assert (again[1200].seq, again[1200].duplicate) == (1151, True)
    assert (again[1201].seq, again[1201].duplicate) == (4, True)
    assert log.head().length == 1200
    report = verify_log(engine, key.jwks())
    assert report.valid, report.problems
    engine.dispose()
