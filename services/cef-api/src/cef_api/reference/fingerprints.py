"""Fingerprints of the records of a reference file, so that a reload recognises the records the
version in force holds already and parses, tokenises and writes only the others.

A fingerprint is a 120-bit BLAKE2b digest of a record's line exactly as the file held it (a
changed space is a changed record), keyed by a key made for the file from:
- the CEF API's fingerprint key, derived from its key-encryption key (kept outside the database):
  without it a stored fingerprint cannot confirm a guessed record, as a plain hash of an NHS
  number, a date of birth and a postcode could;
- the dataset, the file's header row and `PARSER_REVISION`: a file whose columns moved, or a
  release whose parser reads records differently, shares no fingerprint with the version in force,
  so every record of it is read again.

Only a file of one record a line is fingerprinted: no quote character (so no field holds a comma
or a line break) and no carriage return but before a line feed. Its records are then its lines,
and a record's fields joined by commas are its line, so the digest of a line (a reload's first
pass, over bytes) and of a parsed record (a first load) are the same. Any other file is read whole
at every load, and its rows have no fingerprint.

A record whose fingerprint the version in force holds is the same record the row was read from,
checked by the same parser: its row stands as it is (its tokens were made under the key versions
the reload is pinned to). Everything else is read as in a first load.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import structlog

from cef_api.config import Settings

log = structlog.get_logger(__name__)

# Bump when a parser of a fingerprinted dataset changes what it accepts or how it reads a record:
# every record is then read again at the next load.
PARSER_REVISION = b"reference-parsers/1"
# 15 bytes: a sixteenth would round each of the million digests a first load holds up from 48 bytes
# of memory to 64; 120 bits leave a chance of one changed record taken for another under 2^-70.
DIGEST_BYTES = 15


def derive_key(key_encryption_key: bytes) -> bytes:
    """The fingerprint key: a keyed BLAKE2b of a fixed label, so the KEK itself is never used twice."""
    return hashlib.blake2b(b"cef-api reference record fingerprints", key=key_encryption_key).digest()[:32]


def key_from_settings(settings: Settings) -> bytes | None:
    """The fingerprint key of the settings' key-encryption key (CEF_API_QUEUE_KEY_FILE; outside
    production a development key is made). Without one, every load reads its whole file."""
    # Imported here: the queue package imports the validation workers, which import this module.
    from cef_api.queue.envelope import QueueKeyError, load_key_ring

    try:
        ring = load_key_ring(settings)
    except QueueKeyError as exc:
        log.warning("reference_fingerprints_off", reason=str(exc))
        return None
    return derive_key(ring.current.key)


def file_digest(key: bytes, dataset: str, data: bytes) -> bytes:
    """A keyed digest of a whole file of a dataset (one read of the bytes, in C)."""
    whole = hashlib.blake2b(b"\x1e".join((PARSER_REVISION, dataset.encode(), b"")), key=key, digest_size=32)
    whole.update(data)
    return whole.digest()


def one_record_a_line(data: bytes) -> bool:
    """Whether every record of the file is one line (see the module's description)."""
    return b'"' not in data and data.count(b"\r") == data.count(b"\r\n")


@dataclass
class Recognised:
    """A reload's first pass: the file without the lines the version in force holds."""

    rest: bytes  # the header line and every line not recognised, in the file's order
    kept: int  # lines recognised: their rows stand
    retiring: set[int] = field(default_factory=set)  # ids of the rows whose lines left the file


class Fingerprints:
    """The fingerprints of one file's records.

    `recognise` (a reload) finds, over the file's bytes, the lines whose fingerprints the version in
    force holds (and takes them out of the map it is given). The parser then calls `start` with
    the header row and `see` with each record it reads; `fingerprints` gets each record's
    digest, in the order the rows are made (the reader takes them as it makes the rows)."""

    def __init__(self, key: bytes, dataset: str) -> None:
        self._key = key
        self._dataset = dataset.encode()
        self._file_key = b""
        self.fingerprints: list[bytes] = []

    def _keyed_by(self, header_line: bytes) -> bytes:
        layout = b"\x1e".join((PARSER_REVISION, self._dataset, header_line))
        return hashlib.blake2b(layout, key=self._key).digest()[:32]

    def start(self, header: list[str]) -> None:
        self._file_key = self._keyed_by(",".join(header).encode())

    def see(self, record: list[str]) -> None:
        """Keeps the record's fingerprint: its fields joined by commas are its line."""
        self.fingerprints.append(
            hashlib.blake2b(",".join(record).encode(), key=self._file_key, digest_size=DIGEST_BYTES).digest()
        )

    def recognise(self, data: bytes, known: dict[bytes, int]) -> Recognised:
        """The file (one record a line: `one_record_a_line`) less the lines whose fingerprints `known`
        (fingerprint → row id of the rows in force) holds, read a line at a time. Each line
        recognised takes its fingerprint out of `known`, so a line written twice is recognised
        once: the second is read, and refused as a repeat of the first."""
        lines = io.BytesIO(data)
        first = lines.readline()
        # The parser reads the header after the byte order mark, as the lines are written.
        header = first.removesuffix(b"\n").removesuffix(b"\r").removeprefix(b"\xef\xbb\xbf")
        file_key = self._keyed_by(header)
        digest, take = hashlib.blake2b, known.pop
        rest = [first]
        kept = 0
        for line in lines:
            record = line.removesuffix(b"\n").removesuffix(b"\r")
            if (
                record
                and take(digest(record, key=file_key, digest_size=DIGEST_BYTES).digest(), None) is not None
            ):
                kept += 1
            else:
                rest.append(line)  # new, changed, or blank (no record)
        return Recognised(rest=b"".join(rest), kept=kept, retiring=set(known.values()))
