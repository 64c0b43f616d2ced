"""Backing data spooled to disk encrypted (AES-GCM) under a key that exists only in this process.

An upload may hold a million NHS numbers; it is on disk only as ciphertext, only while its
invoice is being validated, and is unreadable by anyone (the service included) after a restart."""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK_BYTES = 1024 * 1024
_RECORD = struct.Struct(">I")


class SpoolCipher:
    """The process's spool key: random at start, never written anywhere."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(self, spool_id: bytes, index: int, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, spool_id + struct.pack(">Q", index))

    def open(self, spool_id: bytes, index: int, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], spool_id + struct.pack(">Q", index))


class EncryptedSpool:
    """Write once (streaming), then read back as plaintext chunks any number of times."""

    def __init__(self, directory: Path, cipher: SpoolCipher) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="backing-", suffix=".spool", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._cipher = cipher
        self._id = os.urandom(16)
        self._buffer = bytearray()
        self._chunks = 0
        self._digest = hashlib.sha256()
        self.size = 0
        self.sha256 = ""

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self.size += len(data)
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            self._seal(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def _seal(self, data: bytes) -> None:
        sealed = self._cipher.seal(self._id, self._chunks, data)
        self._file.write(_RECORD.pack(len(sealed)))
        self._file.write(sealed)
        self._chunks += 1

    def finish(self) -> None:
        if self._buffer:
            self._seal(bytes(self._buffer))
            self._buffer.clear()
        self._file.close()
        self.sha256 = self._digest.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            for index in range(self._chunks):
                (length,) = _RECORD.unpack(f.read(_RECORD.size))
                yield self._cipher.open(self._id, index, f.read(length))

    def delete(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def clear_spool_directory(directory: Path) -> int:
    """Removes spools left by an earlier process (unreadable now: their key died with it)."""
    removed = 0
    if directory.is_dir():
        for path in directory.glob("backing-*.spool"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
