"""Tampering of every kind is caught by verify, at the seq where it happened; a rewrite of the whole
chain by someone with database access is caught by a checkpoint (stored, or kept by an auditor)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from audit_test_support import event_json, execute

from cef_audit.log.records import Recorder, index_columns, seal
from cef_audit.log.sequencer import AuditLog
from cef_common.auth import sign_jws
from cef_common.db import make_engine
from cef_common.keys import SigningKey

PRODUCER = Recorder(sub="cef-api", issuer="cef-dev", client="cef-api")


def drop_triggers(url: str) -> None:
    if url.startswith("sqlite"):
        for name in (
            "audit_events_no_update",
            "audit_events_no_delete",
            "audit_checkpoints_no_update",
            "audit_checkpoints_no_delete",
            "audit_head_forward_only",
            "audit_head_no_delete",
        ):
            execute(url, f"DROP TRIGGER {name}")
    else:
        for table in ("audit_events", "audit_checkpoints", "audit_head"):
            execute(url, f"ALTER TABLE {table} DISABLE TRIGGER USER")


def rewrite_chain(url: str, change: Callable[[dict[str, Any]], None], *, from_seq: int = 1) -> None:
    """What an attacker with database access can do: change records and re-seal every hash after
    them, the head included, so the chain is consistent again."""
    engine = make_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT seq, canonical, hash FROM audit_events ORDER BY seq")).all()
        prev = "0" * 64
        for seq, canonical, digest in rows:
            if seq < from_seq:
                prev = digest
                continue
            record = orjson.loads(bytes(canonical))
            change(record)
            record["prev_hash"] = prev
            new_canonical, prev = seal(record)
            cols = dict(
                zip(
                    (
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
                    ),
                    index_columns(record),
                    strict=True,
                )
            )
            conn.execute(
                sa.text(
                    "UPDATE audit_events SET canonical=:c, prev_hash=:p, hash=:h, outcome=:outcome, "
                    "actor_sub=:actor_sub WHERE seq=:seq"
                ),
                {"c": new_canonical, "p": record["prev_hash"], "h": prev, "seq": seq, **cols},
            )
        conn.execute(sa.text("UPDATE audit_head SET head_hash=:h"), {"h": prev})
    engine.dispose()


async def _fill(client: Any, writer: dict[str, str], n: int = 12) -> None:
    r = await client.post("/v1/events", json={"events": [event_json(i) for i in range(n)]}, headers=writer)
    assert r.status_code == 201


async def _verify(client: Any, reader: dict[str, str], kept: list[str] | None = None) -> dict[str, Any]:
    if kept is None:
        r = await client.get("/v1/verify", headers=reader)
    else:
        r = await client.post("/v1/verify", json={"checkpoints": kept}, headers=reader)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_an_intact_log_verifies(client: Any, writer: dict[str, str], reader: dict[str, str]) -> None:
    empty = await _verify(client, reader)
    assert empty["valid"] is True
    assert empty["length"] == 0
    assert empty["first_bad_seq"] is None
    await _fill(client, writer)
    body = await _verify(client, reader)
    assert body["valid"] is True, body
    # The first verify's own audit event is in the log too (13 = 12 + 1).
    assert body["length"] == 13
    assert body["events_checked"] == 13
    assert body["first_bad_seq"] is None
    assert body["problems"] == []
    assert body["checkpoints_checked"] == 1  # one at most every 5 events: the batch took it to 13
    assert body["latest_checkpoint"]["length"] == 13
    assert len(body["head"]) == 64


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("outcome", "'denied'"),
        ("actor_sub", "'someone-else'"),
        ("actor_org", "NULL"),
        ("entity_id", "'inv-x'"),
        ("recorded_at", "'2020-01-01T00:00:00.000000Z'"),
        ("type", "'invoice.delete'"),
        ("prev_hash", "'00'"),
        ("hash", "'ab'"),
    ],
)
async def test_an_edited_column_fails_at_that_seq(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str], column: str, value: str
) -> None:
    await _fill(client, writer)
    drop_triggers(audit_db)
    execute(audit_db, f"UPDATE audit_events SET {column} = {value} WHERE seq = 7")
    body = await _verify(client, reader)
    assert body["valid"] is False
    assert body["first_bad_seq"] == 7, body
    if column != "hash":
        assert f"stored {column}" in body["reason"]


async def test_canonical_bytes_that_are_not_json_fail_at_that_seq(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _fill(client, writer)
    drop_triggers(audit_db)
    garbage = b"{not json"
    execute(
        audit_db,
        "UPDATE audit_events SET canonical = :c, hash = :h WHERE seq = 4",
        {"c": garbage, "h": hashlib.sha256(garbage).hexdigest()},
    )
    body = await _verify(client, reader)
    assert (body["valid"], body["first_bad_seq"]) == (False, 4), body


async def test_edited_canonical_bytes_fail_at_that_seq(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _fill(client, writer)
    drop_triggers(audit_db)
    engine = make_engine(audit_db)
    with engine.begin() as conn:
        canonical = bytes(
            conn.execute(sa.text("SELECT canonical FROM audit_events WHERE seq = 4")).scalar_one()
        )
        conn.execute(
            sa.text("UPDATE audit_events SET canonical = :c WHERE seq = 4"),
            {"c": canonical.replace(b'"purpose":"validation"', b'"purpose":"curiosity!"')},
        )
    engine.dispose()
    body = await _verify(client, reader)
    assert (body["valid"], body["first_bad_seq"]) == (False, 4)


async def test_a_resealed_event_fails_at_that_seq(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    # Event 5 rewritten and its own hash recomputed: event 6 still names the original.
    await _fill(client, writer)
    drop_triggers(audit_db)
    engine = make_engine(audit_db)
    with engine.begin() as conn:
        record = orjson.loads(
            bytes(conn.execute(sa.text("SELECT canonical FROM audit_events WHERE seq = 5")).scalar_one())
        )
        record["purpose"] = "nothing to see"
        canonical, digest = seal(record)
        conn.execute(
            sa.text("UPDATE audit_events SET canonical = :c, hash = :h WHERE seq = 5"),
            {"c": canonical, "h": digest},
        )
    engine.dispose()
    body = await _verify(client, reader)
    assert (body["valid"], body["first_bad_seq"]) == (False, 5)


@pytest.mark.parametrize("seq", [1, 6, 12])
async def test_a_deleted_event_fails_at_that_seq(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str], seq: int
) -> None:
    await _fill(client, writer)
    drop_triggers(audit_db)
    execute(audit_db, f"DELETE FROM audit_events WHERE seq = {seq}")
    body = await _verify(client, reader)
    assert (body["valid"], body["first_bad_seq"]) == (False, seq), body


async def test_a_truncated_tail_with_a_rewound_head_is_caught_by_a_checkpoint(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _fill(client, writer, 10)  # checkpoint at 10
    drop_triggers(audit_db)
    engine = make_engine(audit_db)
    with engine.begin() as conn:
        nine = conn.execute(sa.text("SELECT hash FROM audit_events WHERE seq = 9")).scalar_one()
        conn.execute(sa.text("DELETE FROM audit_events WHERE seq = 10"))
        conn.execute(sa.text("UPDATE audit_head SET length = 9, head_hash = :h"), {"h": nine})
    engine.dispose()
    body = await _verify(client, reader)
    assert (body["valid"], body["first_bad_seq"]) == (False, 10), body


async def test_a_rewritten_chain_is_caught_by_the_stored_checkpoint(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _fill(client, writer, 5)  # checkpoint at 5
    await _fill(client, writer, 5)  # checkpoint at 10
    drop_triggers(audit_db)

    def hide(record: dict[str, Any]) -> None:
        if record["seq"] == 7:
            record["outcome"] = "success"
            record["actor"]["sub"] = "nobody"

    rewrite_chain(audit_db, hide, from_seq=7)
    body = await _verify(client, reader)
    assert body["valid"] is False
    # Events up to the checkpoint at 5 are vouched for; the rewrite lies after it.
    assert body["first_bad_seq"] == 6, body
    assert "checkpoint at length 10" in body["reason"]


async def test_a_rewrite_that_also_deletes_checkpoints_is_caught_by_a_kept_one(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _fill(client, writer, 10)
    kept = (await client.get("/v1/checkpoints", headers=reader)).json()
    assert kept["length"] == 10
    before = await _verify(client, reader, [kept["jws"]])
    assert before["valid"] is True
    assert before["kept_checkpoints_checked"] == 1
    drop_triggers(audit_db)
    execute(audit_db, "DELETE FROM audit_checkpoints")
    rewrite_chain(audit_db, lambda r: r.update(purpose="rewritten") if r["seq"] == 3 else None)
    # Without the auditor's checkpoint the forgery is consistent…
    alone = await _verify(client, reader)
    assert alone["valid"] is True
    # …with it, it is not.
    body = await _verify(client, reader, [kept["jws"]])
    assert body["valid"] is False
    assert body["first_bad_seq"] == 1
    assert "kept checkpoint at length 10" in body["reason"]


async def test_forged_checkpoints_are_reported(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str]
) -> None:
    await _fill(client, writer, 5)
    stranger = SigningKey.generate()
    forged = sign_jws(
        stranger, orjson.dumps({"origin": "cef-audit", "length": 5, "head": "0" * 64, "time": "x"})
    )
    body = await _verify(client, reader, [forged, "not-a-jws"])
    assert body["valid"] is False
    assert body["first_bad_seq"] is None
    assert any("kept checkpoint #1" in p for p in body["problems"])
    assert any("kept checkpoint #2" in p for p in body["problems"])
    # A stored checkpoint whose columns were edited no longer matches what was signed.
    drop_triggers(audit_db)
    execute(audit_db, "UPDATE audit_checkpoints SET head_hash = :h WHERE length = 5", {"h": "f" * 64})
    body = await _verify(client, reader)
    assert body["valid"] is False
    assert any("differ from what was signed" in p for p in body["problems"])


async def test_checkpoint_endpoints(client: Any, writer: dict[str, str], reader: dict[str, str]) -> None:
    r = await client.get("/v1/checkpoints", headers=reader)
    assert r.status_code == 404
    assert r.json()["code"] == "no-checkpoint"
    await _fill(client, writer, 5)
    latest = (await client.get("/v1/checkpoints", headers=reader)).json()
    # 6: the refused request above is on record too.
    assert latest["length"] == 6
    assert latest["origin"] == "cef-audit"
    by_query = (await client.get("/v1/checkpoints", params={"length": 6}, headers=reader)).json()
    by_path = (await client.get("/v1/checkpoints/6", headers=reader)).json()
    assert latest == by_query == by_path
    assert (await client.get("/v1/checkpoints/4", headers=reader)).status_code == 404
    assert (await client.get("/v1/checkpoints", params={"length": 0}, headers=reader)).status_code == 422
    # Anyone holding the service's JWKS can check the signature and the head it names.
    from cef_audit.integrity.verify import open_checkpoint

    jwks = (await client.get("/.well-known/jwks.json")).json()
    length, head, _ = open_checkpoint(latest["jws"], jwks)
    assert (length, head) == (6, latest["head"])
    page = (await client.get("/v1/events", params={"order": "desc", "limit": 10}, headers=reader)).json()
    assert [e["hash"] for e in page["items"] if e["seq"] == 6] == [head]
    assert hashlib.sha256(b"").hexdigest() != head


async def test_the_timer_signs_checkpoints(
    sqlite_db: str, make_settings: Any, writer: dict[str, str]
) -> None:
    import asyncio

    from cef_audit.main import create_app
    from cef_common.testing import app_client

    app = create_app(make_settings(sqlite_db, checkpoint_every_events=1000, checkpoint_interval_seconds=0.05))
    async with app_client(app) as c:
        await _fill(c, writer, 3)
        log: AuditLog = app.state.audit_log
        for _ in range(100):
            with log.engine.connect() as conn:
                if conn.execute(sa.text("SELECT max(length) FROM audit_checkpoints")).scalar_one() == 3:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("no checkpoint signed by the timer")


@pytest.mark.parametrize("seq", [2, 7, 11])
async def test_column_checks_split_in_ranges_find_the_first(
    client: Any, audit_db: str, writer: dict[str, str], reader: dict[str, str], monkeypatch: Any, seq: int
) -> None:
    from cef_audit.integrity import verify

    monkeypatch.setattr(verify, "_POSTGRES_PARTS", 3)
    monkeypatch.setattr(verify, "_SPLIT_FROM", 1)
    await _fill(client, writer)
    drop_triggers(audit_db)
    execute(audit_db, f"UPDATE audit_events SET entity_id = 'moved' WHERE seq IN ({seq}, 12)")
    body = await _verify(client, reader)
    assert (body["valid"], body["first_bad_seq"]) == (False, seq), body
    assert "stored entity_id" in body["reason"]
