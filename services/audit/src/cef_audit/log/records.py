"""How an accepted event becomes a chained record: the exact fields hashed and the index columns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from cef_audit.canonical import _MAX_SAFE_INTEGER, canonical_json, fast_path_exact

# The fields of a stored record besides the producer's event; `hash` is SHA-256 over the RFC 8785
# serialisation of everything else, so an exported record can be checked on its own.
CHAIN_FIELDS = ("seq", "recorded_at", "recorded_by", "prev_hash")


def utc_stamp(moment: datetime) -> str:
    """Fixed-width UTC text that sorts as time does: 2026-11-23T11:04:02.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_stamp() -> str:
    return utc_stamp(datetime.now(UTC))


@dataclass(frozen=True)
class Recorder:
    """The authenticated caller that delivered an event (the producing service), as opposed to the
    actor the producer declares inside it."""

    sub: str
    issuer: str | None = None
    client: str | None = None
    org: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"sub": self.sub, "issuer": self.issuer, "client": self.client, "org": self.org}


def build_record(
    event: dict[str, Any], *, seq: int, recorded_at: str, recorded_by: Recorder, prev_hash: str
) -> dict[str, Any]:
    """The record for `event` (an AuditEventIn dumped in JSON mode) at position `seq`."""
    return {
        **event,
        "seq": seq,
        "recorded_at": recorded_at,
        "recorded_by": recorded_by.as_json(),
        "prev_hash": prev_hash,
    }


def seal(record: dict[str, Any]) -> tuple[bytes, str]:
    """The canonical bytes of a record and their SHA-256 (hex): the event's hash."""
    entity = record.get("entity")
    count = entity.get("count") if isinstance(entity, dict) else None
    # Every other field is an ASCII-keyed string, null or small integer by construction (the
    # event was validated); only `detail` and an entity count can need the reference serialiser.
    if fast_path_exact(record.get("detail")) and (count is None or fast_path_exact(count)):
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    else:
        canonical = canonical_json(record)
    return canonical, hashlib.sha256(canonical).hexdigest()


def seal_in_place(
    event: dict[str, Any], seq: int, recorded_at: str, recorded_by: dict[str, str | None], prev_hash: str
) -> tuple[str, tuple[Any, ...]]:
    """Makes the dumped `event` (which the caller owns) its record at `seq`, adding the chain fields
    to it, and returns the record's hash and row: `build_record`, `seal` and `row_for` in one step,
    for the sequencer's per-event loop. `recorded_by` is `Recorder.as_json()`, shared by the batch.

    Adding four keys to the dumped event instead of copying it into a new dict saves a dict of
    sixteen entries per event (the serialised bytes are the same: orjson sorts the keys)."""
    event["seq"] = seq
    event["recorded_at"] = recorded_at
    event["recorded_by"] = recorded_by
    event["prev_hash"] = prev_hash
    # A dumped event has every field (None when unset), so plain indexing is safe.
    actor = event["actor"]
    entity = event["entity"]
    if entity is None:
        entity_type = entity_id = count = None
    else:
        entity_type, entity_id, count = entity["type"], entity["id"], entity["count"]
    # As in `seal`: only `detail` and an entity count can need the reference serialiser.
    if (count is None or (type(count) is int and -_MAX_SAFE_INTEGER <= count <= _MAX_SAFE_INTEGER)) and (
        fast_path_exact(event["detail"])
    ):
        canonical = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    else:
        canonical = canonical_json(event)
    digest = hashlib.sha256(canonical).hexdigest()
    row = (
        seq,
        event["event_id"],
        recorded_at,
        event["action"],
        event["type"],
        event["outcome"],
        actor["sub"],
        actor["org"],
        actor["client"],
        event["source"],
        entity_type,
        entity_id,
        canonical,
        prev_hash,
        digest,
    )
    return digest, row


def sealed_row(
    event: dict[str, Any], *, seq: int, recorded_at: str, recorded_by: dict[str, str | None], prev_hash: str
) -> tuple[dict[str, Any], str, tuple[Any, ...]]:
    """`seal_in_place` on a copy of `event`: the record, its hash and its row."""
    record = dict(event)
    digest, row = seal_in_place(record, seq, recorded_at, recorded_by, prev_hash)
    return record, digest, row


def index_columns(record: dict[str, Any]) -> tuple[Any, ...]:
    """The queryable columns as they must be stored for `record`, in `INDEX_COLUMN_NAMES` order."""
    actor = record["actor"]
    entity = record.get("entity") or {}
    return (
        record["event_id"],
        record["recorded_at"],
        record["action"],
        record["type"],
        record["outcome"],
        actor["sub"],
        actor.get("org"),
        actor.get("client"),
        record["source"],
        entity.get("type"),
        entity.get("id"),
    )


INDEX_COLUMN_NAMES = (
    "event_id",
    "recorded_at",
    "action",
    "type",
    "outcome",
    "actor_sub",
    "actor_org",
    "actor_client",
    "source",
    "entity_type",
    "entity_id",
)


# The column order of `row_for` tuples (one executemany of plain tuples: the fastest insert).
ROW_COLUMNS = ("seq", *INDEX_COLUMN_NAMES, "canonical", "prev_hash", "hash")


def row_for(record: dict[str, Any], canonical: bytes, digest: str) -> tuple[Any, ...]:
    return (record["seq"], *index_columns(record), canonical, record["prev_hash"], digest)


def event_fields_of(record: dict[str, Any]) -> dict[str, Any]:
    """The producer's event inside a stored record (what idempotent re-delivery must match)."""
    return {k: v for k, v in record.items() if k not in CHAIN_FIELDS}


def item_of(canonical: bytes, digest: str) -> dict[str, Any]:
    """A stored record as the API returns it: the hashed fields plus `hash`."""
    record: dict[str, Any] = orjson.loads(canonical)
    record["hash"] = digest
    return record
