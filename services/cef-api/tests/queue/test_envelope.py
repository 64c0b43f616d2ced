"""Envelope encryption of queued backing data: nothing readable at rest, the data key wrapped by
the KEK, rotation through previous keys, and the rows gone on delete."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import identifiers

from cef_api.config import Settings
from cef_api.queue.envelope import (
    DEV_QUEUE_KEY_NAME,
    BackingStore,
    BackingUnavailable,
    KeyEncryptionKey,
    KeyRing,
    QueueKeyError,
    load_key_ring,
)
from cef_api.spool import EncryptedSpool, SpoolCipher
from cef_common import db


def _kek() -> KeyEncryptionKey:
    return KeyEncryptionKey(secrets.token_bytes(32))


def _spool(tmp_path: Path, data: bytes) -> EncryptedSpool:
    spool = EncryptedSpool(tmp_path / "spool", SpoolCipher())
    # Several chunks: the store seals and reads them one by one.
    for start in range(0, len(data), 1000):
        spool.write(data[start : start + 1000])
    spool.finish()
    return spool


def _insert_invoice(engine: sa.Engine, seq: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO invoice (seq, id, invoice_number, provider_code, commissioner_code,"
                " invoice_date, period_start, period_end, status, submitted_at, submitted_by,"
                " request_hash, backing_bytes, background, lines_done, lines, valid, query, rejected,"
                " claimed_pennies, validated_pennies, reference_versions)"
                " VALUES (:seq, :id, :n, 'RTR', '00K', '2019-05-05', '2019-04-01', '2019-04-30',"
                " 'received', CURRENT_TIMESTAMP, 'x', 'h', 10, TRUE, 0, 0, 0, 0, 0, 0, 0, '{}')"
            ),
            {"seq": seq, "id": f"00000000-0000-0000-0000-{seq:012d}", "n": f"N-{seq}"},
        )


def test_stored_backing_is_sealed_wrapped_and_deleted(
    tmp_path: Path, db_kind: str, database_factory: Any, world: generate_world.World
) -> None:
    from cef_api.main import MIGRATIONS

    engine = db.make_engine(database_factory(db_kind, MIGRATIONS))
    _insert_invoice(engine, 1)
    kek = _kek()
    store = BackingStore(engine, KeyRing(kek))
    plain = b"".join(inv.backing for inv in world.invoices)
    spool = _spool(tmp_path, plain)
    # The spool's own chunks are 1 MiB; this data is smaller, so force several store chunks through
    # a spool of many writes: the store keeps the spool's chunking.
    store.store(1, spool)
    spool.delete()
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT kek_id, wrapped_key, size FROM queue_backing")).one()
        sealed = [bytes(s) for (s,) in conn.execute(sa.text("SELECT sealed FROM queue_backing_chunk"))]
    assert row.kek_id == kek.key_id
    assert row.size == len(plain)
    blob = b"".join(sealed) + bytes(row.wrapped_key)
    nhs, _, _ = identifiers(world)
    assert not [n for n in nhs if n.encode() in blob]
    assert b"activity_date" not in blob
    # The data key is stored wrapped (nonce + 32 bytes + tag), never as itself.
    assert len(bytes(row.wrapped_key)) == 12 + 32 + 16
    assert b"".join(store.chunks(1)) == plain
    # Another KEK cannot open it; a rotated ring with the old KEK as previous can.
    with pytest.raises(BackingUnavailable):
        b"".join(BackingStore(engine, KeyRing(_kek())).chunks(1))
    assert b"".join(BackingStore(engine, KeyRing(_kek(), (kek,))).chunks(1)) == plain
    assert store.kek_ids_in_use() == {kek.key_id: 1}
    restored = store.restore(1, tmp_path / "spool", SpoolCipher())
    assert b"".join(restored.chunks()) == plain
    restored.delete()
    store.delete(1)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM queue_backing")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM queue_backing_chunk")).scalar_one() == 0
    with pytest.raises(BackingUnavailable):
        list(store.chunks(1))
    engine.dispose()


def test_a_tampered_chunk_does_not_open(tmp_path: Path, db_kind: str, database_factory: Any) -> None:
    from cef_api.main import MIGRATIONS

    engine = db.make_engine(database_factory(db_kind, MIGRATIONS))
    _insert_invoice(engine, 1)
    _insert_invoice(engine, 2)
    store = BackingStore(engine, KeyRing(_kek()))
    for seq in (1, 2):
        spool = _spool(tmp_path, b"line_ref,x\n1,2\n" * 10)
        store.store(seq, spool)
        spool.delete()
    # A chunk moved from one invoice to another fails authentication (bound to seq and position).
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE queue_backing_chunk SET sealed = (SELECT sealed FROM queue_backing_chunk"
                " WHERE invoice_seq = 1 AND idx = 0) WHERE invoice_seq = 2 AND idx = 0"
            )
        )
    with pytest.raises(BackingUnavailable):
        list(store.chunks(2))
    engine.dispose()


def test_key_ring_from_settings(tmp_path: Path) -> None:
    dev = Settings(data_dir=tmp_path, environment="test")
    ring = load_key_ring(dev)
    assert (tmp_path / "keys" / DEV_QUEUE_KEY_NAME).stat().st_mode & 0o077 == 0
    assert load_key_ring(dev).current == ring.current  # made once, then read
    inline = Settings(data_dir=tmp_path, environment="test", queue_key="ab" * 32)
    assert load_key_ring(inline).current.key == bytes.fromhex("ab" * 32)
    with pytest.raises(QueueKeyError, match="256 bits"):
        load_key_ring(Settings(data_dir=tmp_path, environment="test", queue_key="abcd"))
    with pytest.raises(QueueKeyError, match="in production"):
        load_key_ring(Settings.model_construct(**{**dev.model_dump(), "environment": "production"}))
