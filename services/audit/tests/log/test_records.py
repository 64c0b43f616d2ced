"""The sequencer's one-pass `sealed_row` stores exactly what the step-by-step path does, and its
bytes are the RFC 8785 form of the record: the chain's hashes depend on both."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cef_audit.log.records import Recorder, build_record, row_for, seal, seal_in_place, sealed_row
from cef_common.audit import AuditEventIn

detail_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
maybe_text = st.none() | st.text(min_size=1, max_size=12)

events = st.builds(
    lambda action, outcome, sub, org, client, entity, purpose, detail: AuditEventIn(
        action=action,
        type="invoice.submit",
        outcome=outcome,
        actor={"sub": sub, "org": org, "client": client},
        source="cef-api",
        entity=entity,
        purpose=purpose,
        detail=detail,
    ).model_dump(mode="json"),
    st.sampled_from(["create", "read", "update", "delete", "execute"]),
    st.sampled_from(["success", "failure", "denied"]),
    st.text(min_size=1, max_size=12),
    maybe_text,
    maybe_text,
    st.none()
    | st.builds(
        lambda t, i, c: {"type": t, "id": i, "count": c},
        st.text(min_size=1, max_size=8),
        maybe_text,
        st.none() | st.integers(min_value=0, max_value=10**9),
    ),
    maybe_text,
    st.dictionaries(st.text(max_size=8), detail_values, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(event=events, seq=st.integers(min_value=1, max_value=10**9))
def test_sealed_row_equals_the_step_by_step_path(event: dict[str, Any], seq: int) -> None:
    recorder = Recorder(sub="cef-api", issuer="cef-api", client="cef-api")
    prev = hashlib.sha256(str(seq).encode()).hexdigest()
    stamp = "2026-11-23T12:00:00.000000Z"

    record, digest, row = sealed_row(
        event, seq=seq, recorded_at=stamp, recorded_by=recorder.as_json(), prev_hash=prev
    )
    expected_record = build_record(event, seq=seq, recorded_at=stamp, recorded_by=recorder, prev_hash=prev)
    canonical, expected_digest = seal(expected_record)

    assert record == expected_record
    assert digest == expected_digest
    assert row == row_for(expected_record, canonical, expected_digest)
    assert canonical == rfc8785.dumps(expected_record)
    assert digest == hashlib.sha256(rfc8785.dumps(expected_record)).hexdigest()


@pytest.mark.parametrize("count", [2**53 - 1, -(2**53) + 1, 2**53, -(2**53), 2**63])
def test_entity_counts_at_the_edge_of_exact_json(count: int) -> None:
    # Integers beyond ±(2**53 - 1) have no exact JSON form: refused exactly as the reference refuses.
    event = AuditEventIn(
        action="read",
        type="invoice.read",
        outcome="success",
        actor={"sub": "u"},
        source="cef-api",
        entity={"type": "invoice", "count": count},
    ).model_dump(mode="json")
    recorder = Recorder(sub="cef-api")
    stamp, prev = "2026-11-23T12:00:00.000000Z", "0" * 64
    expected = build_record(event, seq=1, recorded_at=stamp, recorded_by=recorder, prev_hash=prev)
    if abs(count) < 2**53:
        _, digest, _ = sealed_row(
            event, seq=1, recorded_at=stamp, recorded_by=recorder.as_json(), prev_hash=prev
        )
        assert digest == hashlib.sha256(rfc8785.dumps(expected)).hexdigest()
    else:
        with pytest.raises(rfc8785.IntegerDomainError, match="safe integer"):
            rfc8785.dumps(expected)
        with pytest.raises(rfc8785.IntegerDomainError, match="safe integer"):
            sealed_row(event, seq=1, recorded_at=stamp, recorded_by=recorder.as_json(), prev_hash=prev)


# Beyond the fast path: integers without an exact JSON form, keys at and above U+E000 (where UTF-16
# order and code point order differ), floats, and nesting, inside `detail`.
awkward_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**53 - 1, 2**53, -(2**53), 2**64])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=4) | st.sampled_from(["\ue000", "\U0001f600", "\uffff", "a"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(event=events, detail=awkward_values, seq=st.integers(min_value=1, max_value=10**9))
def test_sealing_in_place_is_the_reference_serialisation(
    event: dict[str, Any], detail: Any, seq: int
) -> None:
    # The sequencer adds the chain fields to the dumped event itself: its bytes must still be
    # exactly RFC 8785's for the record, and a number without an exact form refused as it refuses.
    event["detail"] = {"x": detail}
    recorder = Recorder(sub="cef-api", issuer="cef-dev", client="cef-api")
    prev = hashlib.sha256(str(seq).encode()).hexdigest()
    stamp = "2026-12-01T12:00:00.000000Z"
    expected_record = build_record(event, seq=seq, recorded_at=stamp, recorded_by=recorder, prev_hash=prev)
    try:
        expected = rfc8785.dumps(expected_record)
    except rfc8785.IntegerDomainError:
        with pytest.raises(rfc8785.IntegerDomainError):
            seal_in_place(event, seq, stamp, recorder.as_json(), prev)
        return
    digest, row = seal_in_place(event, seq, stamp, recorder.as_json(), prev)
    assert event == expected_record
    assert row[12] == expected
    assert digest == hashlib.sha256(expected).hexdigest()
    assert row == row_for(expected_record, expected, digest)
