"""Backing data held in the database for a queued validation, under envelope encryption.

Each invoice gets its own random 256-bit data key; its backing data is sealed with it (AES-GCM) in
chunks of the spool's size, each bound to the invoice and its position (associated data), and the
data key is stored only wrapped (AES-GCM) by the key-encryption key (KEK) of the settings. The
database therefore never holds backing data or a usable key: reading it needs the KEK, which lives
outside the database. Rows are removed when the job ends (success or final failure)."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine

from cef_api.config import Settings
from cef_api.spool import EncryptedSpool, SpoolCipher

DEV_QUEUE_KEY_NAME = "queue-kek.key"
_NONCE = 12

metadata = sa.MetaData()
backing_t = sa.Table(
    "queue_backing",
    metadata,
    sa.Column("invoice_seq", sa.Integer, primary_key=True),
    sa.Column("kek_id", sa.String(32), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("restarts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
chunk_t = sa.Table(
    "queue_backing_chunk",
    metadata,
    sa.Column("invoice_seq", sa.Integer, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
)


class QueueKeyError(RuntimeError):
    """The key-encryption key is missing or unusable; the message says what to set, never a key."""


class BackingUnavailable(RuntimeError):
    """The stored backing data of an invoice is missing or cannot be opened with the keys held."""


@dataclass(frozen=True)
class KeyEncryptionKey:
    """A 256-bit KEK and its id (a digest that names it in stored rows without revealing it)."""

    key: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"cef-queue-kek\x00" + self.key).hexdigest()[:16]

    @classmethod
    def from_hex(cls, text: str, *, where: str) -> KeyEncryptionKey:
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise QueueKeyError(f"{where}: not hexadecimal; give a 256-bit key as 64 hex digits") from None
        if len(key) != 32:
            raise QueueKeyError(f"{where}: a key-encryption key is 256 bits (64 hex digits)")
        return cls(key)


@dataclass(frozen=True)
class KeyRing:
    """The current KEK (wraps every new data key) and earlier ones (unwrap only)."""

    current: KeyEncryptionKey
    previous: tuple[KeyEncryptionKey, ...] = ()

    def by_id(self, key_id: str) -> KeyEncryptionKey:
        for kek in (self.current, *self.previous):
            if kek.key_id == key_id:
                return kek
        raise BackingUnavailable(
            f"the backing data was stored under key-encryption key {key_id}, which this node does not "
            "hold: add it to CEF_API_QUEUE_PREVIOUS_KEY_FILES"
        )


def ensure_dev_queue_key(path: Path) -> bool:
    """Creates a random development KEK at `path` (0600); True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this node made it first
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True


def _read_key_file(path: Path, settings: Settings) -> KeyEncryptionKey:
    if not path.is_file():
        raise QueueKeyError(f"the queue key file {path} does not exist")
    if settings.is_production and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise QueueKeyError(f"the queue key file {path} is readable by other users: chmod 600 it")
    return KeyEncryptionKey.from_hex(path.read_text(encoding="ascii", errors="replace"), where=str(path))


def load_key_ring(settings: Settings) -> KeyRing:
    """The KEKs of the settings: QUEUE_KEY, else QUEUE_KEY_FILE, else (outside production only) the
    development key under DATA_DIR/keys, made on first use."""
    if settings.queue_key is not None and settings.queue_key_file is not None:
        raise QueueKeyError(
            "give the queue key either as CEF_API_QUEUE_KEY or CEF_API_QUEUE_KEY_FILE, not both"
        )
    if settings.queue_key is not None:
        current = KeyEncryptionKey.from_hex(settings.queue_key.get_secret_value(), where="CEF_API_QUEUE_KEY")
    elif settings.queue_key_file is not None:
        current = _read_key_file(settings.queue_key_file, settings)
    elif settings.is_production:
        raise QueueKeyError(
            "the validation queue needs a key-encryption key in production: set CEF_API_QUEUE_KEY_FILE "
            "(or CEF_API_QUEUE_KEY) to a 256-bit key in hex kept outside the database"
        )
    else:
        path = settings.keys_dir / DEV_QUEUE_KEY_NAME
        ensure_dev_queue_key(path)
        current = _read_key_file(path, settings)
    previous = tuple(_read_key_file(p, settings) for p in settings.queue_previous_key_files)
    return KeyRing(current, previous)


def _dek_aad(seq: int) -> bytes:
    return b"cef-queue-dek\x00" + struct.pack(">Q", seq)


def _chunk_aad(seq: int, index: int) -> bytes:
    return b"cef-queue-chunk\x00" + struct.pack(">QQ", seq, index)


def _seal(aead: AESGCM, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + aead.encrypt(nonce, data, aad)


def _open(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)


class BackingStore:
    """Stores, reads back and deletes the envelope-encrypted backing data of queued invoices."""

    def __init__(self, engine: Engine, keys: KeyRing) -> None:
        self.engine = engine
        self.keys = keys

    def store(self, seq: int, spool: EncryptedSpool) -> None:
        """Seals `spool`'s plaintext chunk by chunk under a new data key; one transaction."""
        data_key = AESGCM.generate_key(bit_length=256)
        aead = AESGCM(data_key)
        kek = self.keys.current
        wrapped = _seal(AESGCM(kek.key), data_key, _dek_aad(seq))
        with self.engine.begin() as conn:
            conn.execute(sa.delete(chunk_t).where(chunk_t.c.invoice_seq == seq))
            conn.execute(sa.delete(backing_t).where(backing_t.c.invoice_seq == seq))
            conn.execute(
                sa.insert(backing_t).values(
                    invoice_seq=seq,
                    kek_id=kek.key_id,
                    wrapped_key=wrapped,
                    chunks=0,
                    size=spool.size,
                    restarts=0,
                    created_at=datetime.now(UTC),
                )
            )
            count = 0
            for index, chunk in enumerate(spool.chunks()):
                conn.execute(
                    sa.insert(chunk_t).values(
                        invoice_seq=seq, idx=index, sealed=_seal(aead, chunk, _chunk_aad(seq, index))
                    )
                )
                count += 1
            conn.execute(sa.update(backing_t).where(backing_t.c.invoice_seq == seq).values(chunks=count))

    def exists(self, seq: int) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(backing_t.c.invoice_seq).where(backing_t.c.invoice_seq == seq))
            return found.first() is not None

    def _data_key(self, conn: Connection, seq: int) -> tuple[AESGCM, int]:
        row = conn.execute(
            sa.select(backing_t.c.kek_id, backing_t.c.wrapped_key, backing_t.c.chunks).where(
                backing_t.c.invoice_seq == seq
            )
        ).first()
        if row is None:
            raise BackingUnavailable("no backing data is stored for this invoice")
        kek = self.keys.by_id(row.kek_id)
        try:
            data_key = _open(AESGCM(kek.key), bytes(row.wrapped_key), _dek_aad(seq))
        except InvalidTag:
            raise BackingUnavailable("the stored data key does not unwrap (tampered or moved)") from None
        return AESGCM(data_key), int(row.chunks)

    def chunks(self, seq: int) -> Iterator[bytes]:
        """The plaintext chunks, read one row at a time (memory stays at one chunk)."""
        with self.engine.connect() as conn:
            aead, count = self._data_key(conn, seq)
        for index in range(count):
            with self.engine.connect() as conn:
                sealed = conn.execute(
                    sa.select(chunk_t.c.sealed).where(chunk_t.c.invoice_seq == seq, chunk_t.c.idx == index)
                ).scalar_one_or_none()
            if sealed is None:
                raise BackingUnavailable(f"chunk {index} of the stored backing data is missing")
            try:
                yield _open(aead, bytes(sealed), _chunk_aad(seq, index))
            except InvalidTag:
                raise BackingUnavailable(f"chunk {index} of the stored backing data does not open") from None

    def restore(self, seq: int, directory: Path, cipher: SpoolCipher) -> EncryptedSpool:
        """A local spool (under this process's own key) with the stored backing data, for the
        validation code that reads spools; the caller deletes it."""
        spool = EncryptedSpool(directory, cipher)
        try:
            for chunk in self.chunks(seq):
                spool.write(chunk)
            spool.finish()
        except BaseException:
            spool.delete()
            raise
        return spool

    def delete(self, seq: int, conn: Connection | None = None) -> None:
        if conn is None:
            with self.engine.begin() as own:
                self.delete(seq, own)
            return
        conn.execute(sa.delete(chunk_t).where(chunk_t.c.invoice_seq == seq))
        conn.execute(sa.delete(backing_t).where(backing_t.c.invoice_seq == seq))

    def stored_seqs(self) -> list[int]:
        with self.engine.connect() as conn:
            return [int(s) for (s,) in conn.execute(sa.select(backing_t.c.invoice_seq))]

    def kek_ids_in_use(self) -> dict[str, int]:
        """Rows per KEK id: a previous KEK may be retired once it names none."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(backing_t.c.kek_id, sa.func.count()).group_by(backing_t.c.kek_id)
            ).all()
        return {str(k): int(n) for k, n in rows}
