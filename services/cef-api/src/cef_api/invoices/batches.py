"""One batch of backing data through the rules: parsed and tokenised, assessed by every rule but
the duplicate check (which needs no other batch, so batches can be assessed in other processes),
then settled in line order for duplicates. Pure but for the tokeniser call: no database."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from cef_api.invoices.exceptions import MAX_PENNIES, AmountTooLarge
from cef_api.invoices.repository import LINE_COLUMNS
from cef_api.invoices.schemas import pennies
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import BackingBatch, BatchLayout
from cef_api.validation.engine import PreparedLine, SummaryAccumulator, validate_line
from cef_api.validation.prepared import prepare_batch
from cef_api.validation.types import (
    DuplicateKey,
    InvoiceHeader,
    LineOutcome,
    Outcome,
    Reason,
    ReferenceData,
)


class KeyDigests:
    """The stored form of a duplicate key (`dup_key`): equal keys give equal digests, and nothing
    else of the key is kept. One per batch: the repeated parts (the invoice's codes, the dates) are
    built once."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, str], str] = {}
        self._dates: dict[date, str] = {}

    def digest(self, key: DuplicateKey) -> str:
        codes = (key.provider_code, key.commissioner_code)
        prefix = self._prefixes.get(codes)
        if prefix is None:
            prefix = self._prefixes[codes] = f"{codes[0].upper()}|{codes[1].upper()}|"
        day = self._dates.get(key.activity_date)
        if day is None:
            day = self._dates[key.activity_date] = key.activity_date.isoformat()
        text = f"{prefix}{key.nhs_token}|{day}|{key.hrg_code.upper()}|{key.point_of_delivery.upper()}"
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class _NoEarlierLines:
    """The DuplicateIndex of `assess_batch`: knows no earlier line, so validate_line judges every rule
    but the duplicate check, which `settle_duplicates` then applies in line order. It keeps the key
    check 9 asked about (the line's candidate key; None when check 9 did not run)."""

    __slots__ = ("asked",)

    def __init__(self) -> None:
        self.asked: DuplicateKey | None = None

    def __contains__(self, key: DuplicateKey) -> bool:
        self.asked = key
        return False

    def add(self, key: DuplicateKey) -> None:
        return None


class _StoredForms:
    """The stored forms of one batch's repeated values (activity dates as ISO text, reasons joined,
    amounts in pennies), each made once: the rows share them, and so do their copies in the process
    that stores them, as pickling keeps one of each."""

    __slots__ = ("dates", "reasons", "pennies")

    def __init__(self) -> None:
        self.dates: dict[date, str] = {}
        self.reasons: dict[tuple[Reason, ...], str] = {}
        self.pennies: dict[Decimal, int] = {}

    def date_text(self, day: date) -> str:
        text = self.dates.get(day)
        if text is None:
            text = self.dates[day] = day.isoformat()
        return text

    def reasons_text(self, reasons: tuple[Reason, ...]) -> str:
        text = self.reasons.get(reasons)
        if text is None:
            # Reasons are StrEnums sorted by value (LineOutcome's contract): joined, they are their values.
            text = self.reasons[reasons] = ";".join(reasons)
        return text

    def pennies_of(self, amount: Decimal) -> int:
        value = self.pennies.get(amount)
        if value is None:
            value = pennies(amount)
            if value > MAX_PENNIES:
                raise AmountTooLarge(f"the amount {str(amount)[:40]} of a line")
            self.pennies[amount] = value
        return value


_OUTCOME_TEXT: dict[Outcome, str] = {outcome: outcome.value for outcome in Outcome}

# Where settle_duplicates finds what it changes in a row (repository.LINE_COLUMNS order).
_OUTCOME = LINE_COLUMNS.index("outcome")
_REASONS = LINE_COLUMNS.index("reasons")
_CLAIMED = LINE_COLUMNS.index("claimed_pennies")
_DUP_KEY = LINE_COLUMNS.index("dup_key")


def _row(seq: int, outcome: LineOutcome, stored: _StoredForms) -> tuple[Any, ...]:
    """A line as `repository.LINE_COLUMNS` orders it, its dup_key left for settle_duplicates."""
    expected, claimed = outcome.expected_amount, outcome.claimed_amount
    activity_date = outcome.activity_date
    return (
        seq,
        outcome.line_no,
        outcome.line_ref,
        _OUTCOME_TEXT[outcome.outcome],
        stored.reasons_text(outcome.reasons),
        outcome.responsible_commissioner,
        stored.pennies_of(expected) if expected is not None else None,
        stored.pennies_of(claimed) if claimed is not None else None,
        outcome.nhs_token,
        stored.date_text(activity_date) if activity_date is not None else None,
        outcome.hrg_code,
        outcome.point_of_delivery,
        outcome.service_code,
        None,
    )


@dataclass
class TokenisedBatch:
    """A batch after the first stage: lines prepared and their identifiers turned into tokens."""

    prepared: list[PreparedLine]
    line_tokens: list[str | None]
    dob_tokens: dict[date, str | None]
    seconds: float


def tokenise_batch(
    batch: BackingBatch,
    layout: BatchLayout,
    *,
    tokeniser: TokeniserClient,
    key_version: int | None,
    dob_key_version: int | None,
) -> TokenisedBatch:
    """Parse and prepare one batch, then one tokeniser call per kind for its distinct values, under
    the key versions of the reference data. Identifiers live only in the returned object."""
    t0 = time.perf_counter()
    prepared = prepare_batch(batch, layout)
    nhs_values = sorted({p.nhs_number for p in prepared if p.nhs_number is not None})
    dob_dates = sorted({p.date_of_birth for p in prepared if p.date_of_birth is not None})
    nhs_tokens: dict[str, str | None] = {}
    dob_tokens: dict[date, str | None] = {}
    if nhs_values:
        got = tokeniser.tokenise("nhs_number", nhs_values, key_version=key_version)
        nhs_tokens = dict(zip(nhs_values, got.tokens, strict=True))
    if dob_dates:
        dob_values = [d.isoformat() for d in dob_dates]
        got = tokeniser.tokenise("date_of_birth", dob_values, key_version=dob_key_version)
        dob_tokens = dict(zip(dob_dates, got.tokens, strict=True))
    line_tokens = [nhs_tokens.get(p.nhs_number) if p.nhs_number is not None else None for p in prepared]
    return TokenisedBatch(prepared, line_tokens, dob_tokens, time.perf_counter() - t0)


@dataclass
class AssessedBatch:
    """A batch judged by every rule but the duplicate check: its lines to store, column by column
    in `repository.LINE_COLUMNS` order (dup_key empty until settled), with each line's candidate
    duplicate-key digest (None where check 9 does not run). Columns, because they cross between
    processes in a third of the time rows take, and hold less memory while they wait."""

    columns: list[list[Any]]
    candidates: list[str | None]
    seconds: dict[str, float]

    @property
    def lines(self) -> int:
        return len(self.candidates)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The lines as rows to insert, made one at a time."""
        return zip(*self.columns, strict=True)


def assess_batch(
    batch: TokenisedBatch, *, seq: int, header: InvoiceHeader, reference: ReferenceData
) -> AssessedBatch:
    """validate_line on every line of a tokenised batch, duplicates aside: what needs no earlier line,
    so batches can be assessed apart (in other processes) and settled in order afterwards."""
    t0 = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    candidates: list[str | None] = []
    append, candidate, stored, digests = rows.append, candidates.append, _StoredForms(), KeyDigests()
    dob_tokens = batch.dob_tokens
    no_earlier_lines = _NoEarlierLines()
    for line, nhs_token in zip(batch.prepared, batch.line_tokens, strict=True):
        dob_token = dob_tokens.get(line.date_of_birth) if line.date_of_birth is not None else None
        no_earlier_lines.asked = None
        outcome = validate_line(
            line,
            nhs_token=nhs_token,
            dob_token=dob_token,
            header=header,
            reference=reference,
            duplicates=no_earlier_lines,
        )
        append(_row(seq, outcome, stored))
        key = no_earlier_lines.asked
        candidate(digests.digest(key) if key is not None else None)
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in LINE_COLUMNS]
    return AssessedBatch(
        columns, candidates, {"prepare_and_tokenise_s": batch.seconds, "validate_s": time.perf_counter() - t0}
    )


def _with_duplicate(reasons: str) -> str:
    return ";".join(sorted([*filter(None, reasons.split(";")), Reason.DUPLICATE_ACTIVITY.value]))


def settle_duplicates(batch: AssessedBatch, keys: set[str], summary: SummaryAccumulator) -> AssessedBatch:
    """Check 9 on an assessed batch, in line order, then the summary: a line whose key an earlier
    countable line holds gains DUPLICATE_ACTIVITY and is rejected; a line not rejected counts (its
    digest is stored and remembered). The same outcome validate_line gives with the index itself,
    as an earlier line counts exactly when its own rules and its own duplicate check pass. `keys`:
    the digests of the countable lines before this batch (grows with this batch's). Settles the
    batch in place and returns it."""
    columns = batch.columns
    outcomes, reasons, dup_keys = columns[_OUTCOME], columns[_REASONS], columns[_DUP_KEY]
    rejected = Outcome.REJECTED.value
    for index, digest in enumerate(batch.candidates):
        if digest is None:
            continue
        if digest in keys:
            outcomes[index] = rejected
            reasons[index] = _with_duplicate(reasons[index])
        elif outcomes[index] != rejected:
            keys.add(digest)
            dup_keys[index] = digest
    add = summary.add_pennies
    for outcome, claimed in zip(outcomes, columns[_CLAIMED], strict=True):
        add(outcome, claimed)
    return batch
