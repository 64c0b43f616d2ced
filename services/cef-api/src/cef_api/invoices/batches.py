"""One batch of backing data through the rules: parsed and tokenised, assessed by every rule that
needs no earlier line (so batches can be assessed in other processes), then settled in line order:
the duplicate check (9), then the pathway checks (14, 15), then the summary. Pure but for the
tokeniser call: no database."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Final, TypeVar

from cef_api.invoices.exceptions import MAX_PENNIES, AmountTooLarge
from cef_api.invoices.repository import LINE_COLUMNS
from cef_api.invoices.schemas import pennies
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.csvfile import BackingBatch, BatchLayout
from cef_api.validation.engine import PreparedLine, SummaryAccumulator, check_line
from cef_api.validation.prepared import prepare_batch, stored_codes
from cef_api.validation.rules import verdict_for
from cef_api.validation.rules.pathway import (
    InMemorySpellIndex,
    check_attendance_during_spell,
    check_overlapping_spell,
    pathway_fact,
)
from cef_api.validation.types import DuplicateKey, InvoiceHeader, Outcome, Reason, ReferenceData

K = TypeVar("K")
V = TypeVar("V")


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
    """The DuplicateIndex of `assess_batch`: knows no earlier line, so check_line judges every rule but
    the duplicate check, which `settle_duplicates` then applies in line order."""

    __slots__ = ()

    def __contains__(self, key: DuplicateKey) -> bool:
        return False

    def add(self, key: DuplicateKey) -> None:
        return None


class _StoredForms(dict[K, V]):
    """The stored form of each of one batch's repeated values (`forms[value]`), made by `make` when
    first asked for; asked for again, it costs a dict lookup and no Python call. The rows share one
    of each, and so do their copies in the process that stores them, as pickling keeps one of each."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[K], V]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, value: K) -> V:
        form = self[value] = self.make(value)
        return form


def _verdict_text(found: tuple[Reason, ...]) -> tuple[str, str]:
    """The outcome and the reasons (sorted, `;`-joined) of the reasons a line's checks found."""
    verdict = verdict_for(found)
    # Reasons are StrEnums: joined, they are their values.
    return verdict.outcome.value, ";".join(verdict.reasons)


def _pennies_to_store(amount: Decimal) -> int:
    value = pennies(amount)
    if value > MAX_PENNIES:
        raise AmountTooLarge(f"the amount {str(amount)[:40]} of a line")
    return value


# Where settle_duplicates finds what it changes in a row (repository.LINE_COLUMNS order).
_OUTCOME = LINE_COLUMNS.index("outcome")
_REASONS = LINE_COLUMNS.index("reasons")
_CLAIMED = LINE_COLUMNS.index("claimed_pennies")
_LINE_NO = LINE_COLUMNS.index("line_no")
_DUP_KEY = LINE_COLUMNS.index("dup_key")
# assess_batch collects each line's values but the first and last column (seq, dup_key) in one list.
_PER_LINE = len(LINE_COLUMNS) - 2
_MALFORMED: Final[Sequence[Reason]] = (Reason.MALFORMED_LINE,)


@dataclass
class TokenisedBatch:
    """A batch after the first stage: lines prepared and their identifiers turned into tokens."""

    prepared: list[PreparedLine]
    line_tokens: list[str | None]
    dob_tokens: dict[date, str | None]
    seconds: float
    # Each line's postcode token (stored for re-identification); empty: none for any line.
    postcode_tokens: list[str | None] = field(default_factory=list)


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
    numbers = [p.nhs_number for p in prepared]
    nhs_values = sorted(set(filter(None, numbers)))
    dob_dates = sorted({p.date_of_birth for p in prepared if p.date_of_birth is not None})
    # None, a line without a valid NHS number, is no key: such a line gets no token.
    nhs_tokens: dict[str | None, str | None] = {}
    dob_tokens: dict[date, str | None] = {}
    if nhs_values:
        got = tokeniser.tokenise("nhs_number", nhs_values, key_version=key_version)
        nhs_tokens = dict(zip(nhs_values, got.tokens, strict=True))
    if dob_dates:
        dob_values = [d.isoformat() for d in dob_dates]
        got = tokeniser.tokenise("date_of_birth", dob_values, key_version=dob_key_version)
        dob_tokens = dict(zip(dob_dates, got.tokens, strict=True))
    line_tokens = list(map(nhs_tokens.get, numbers))
    # Postcodes are not needed by any rule (the outward code is), only to re-identify a line's
    # patient later: tokenised under the current key, one call for the batch's distinct ones.
    postcodes = [p.postcode for p in prepared]
    postcode_values = sorted(set(filter(None, postcodes)))
    postcode_tokens: list[str | None] = []
    if postcode_values:
        got = tokeniser.tokenise("postcode", postcode_values)
        by_postcode: dict[str | None, str | None] = dict(zip(postcode_values, got.tokens, strict=True))
        postcode_tokens = list(map(by_postcode.get, postcodes))
    return TokenisedBatch(prepared, line_tokens, dob_tokens, time.perf_counter() - t0, postcode_tokens)


@dataclass
class AssessedBatch:
    """A batch judged by every rule but the duplicate check: its lines to store, column by column
    in `repository.LINE_COLUMNS` order (dup_key empty until settled), with each line's candidate
    duplicate-key digest (None where check 9 does not run). Columns, because they cross between
    processes in a third of the time rows take, and hold less memory while they wait."""

    columns: list[list[Any]]
    candidates: list[str | None]
    seconds: dict[str, float]
    # The lines checks 14 and 15 concern, in line order: (index in the batch, *pathway_fact).
    pathway: list[tuple[int, str, date, date | None]] = field(default_factory=list)
    # Filled by settle_pathway: the spells to store, in repository.SPELL_COLUMNS order.
    spell_rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def patient_tokens(self) -> list[str]:
        """The distinct patient tokens of the lines checks 14 and 15 concern (sorted)."""
        return sorted({fact[1] for fact in self.pathway})

    @property
    def lines(self) -> int:
        return len(self.candidates)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The lines as rows to insert, made one at a time."""
        return zip(*self.columns, strict=True)


def assess_batch(
    batch: TokenisedBatch, *, seq: int, header: InvoiceHeader, reference: ReferenceData
) -> AssessedBatch:
    """What validate_line decides of every line of a tokenised batch, duplicates aside: what needs no
    earlier line, so batches can be assessed apart (in other processes) and settled in order
    afterwards. The lines' values go straight into one list, cut into columns at the end."""
    t0 = time.perf_counter()
    values: list[Any] = []
    candidates: list[str | None] = []
    pathway: list[tuple[int, str, date, date | None]] = []
    extend, candidate, digests = values.extend, candidates.append, KeyDigests()
    verdict_texts = _StoredForms[tuple[Reason, ...], tuple[str, str]](_verdict_text)
    date_texts = _StoredForms[date, str](date.isoformat)
    pennies_of = _StoredForms[Decimal, int](_pennies_to_store)
    dob_tokens = batch.dob_tokens
    no_earlier_lines = _NoEarlierLines()
    # Looked up once for the batch; None leaves check_line to refuse the provider on the first line
    # that is priced, as validate_line does.
    factor = reference.market_forces_factor(header.provider_code.upper())
    postcode_tokens = batch.postcode_tokens or [None] * len(batch.prepared)
    for index, (line, nhs_token, postcode_token) in enumerate(
        zip(batch.prepared, batch.line_tokens, postcode_tokens, strict=True)
    ):
        dob = line.date_of_birth
        dob_token = dob_tokens.get(dob) if dob is not None else None
        if line.malformed:
            found, commissioner, expected, key = _MALFORMED, None, None, None
        else:
            ctx = check_line(
                line,
                nhs_token=nhs_token,
                dob_token=dob_token,
                header=header,
                reference=reference,
                duplicates=no_earlier_lines,
                market_forces_factor=factor,
            )
            found, commissioner, expected, key = (
                ctx.reasons,
                ctx.responsible_commissioner,
                ctx.expected_amount,
                ctx.duplicate_key,
            )
        outcome, reasons = verdict_texts[tuple(found)]
        claimed, activity_date = line.claimed_amount, line.activity_date
        line_ref, hrg_code, point_of_delivery, service_code = stored_codes(line)
        extend(
            (
                line.line_no,
                line_ref,
                outcome,
                reasons,
                commissioner,
                pennies_of[expected] if expected is not None else None,
                pennies_of[claimed] if claimed is not None else None,
                nhs_token,
                date_texts[activity_date] if activity_date is not None else None,
                hrg_code,
                point_of_delivery,
                service_code,
                dob_token,
                postcode_token,
            )
        )
        candidate(digests.digest(key) if key is not None else None)
        fact = pathway_fact(line, nhs_token)
        if fact is not None:
            pathway.append((index, *fact))
    lines = len(candidates)
    columns = [[seq] * lines, *(values[i::_PER_LINE] for i in range(_PER_LINE)), [None] * lines]
    return AssessedBatch(
        columns,
        candidates,
        {"prepare_and_tokenise_s": batch.seconds, "validate_s": time.perf_counter() - t0},
        pathway,
    )


def _with_reason(reasons: str, reason: Reason) -> str:
    return ";".join(sorted([*filter(None, reasons.split(";")), reason.value]))


def settle_duplicates(
    batch: AssessedBatch, keys: set[str], summary: SummaryAccumulator | None = None
) -> AssessedBatch:
    """Check 9 on an assessed batch, in line order: a line whose key an earlier countable line holds
    gains DUPLICATE_ACTIVITY and is rejected; a line not rejected counts (its digest is stored and
    remembered). The same outcome validate_line gives with the index itself, as an earlier line
    counts exactly when its own rules and its own duplicate check pass. `keys`: the digests of the
    countable lines before this batch (grows with this batch's). With a `summary`, the batch is
    then counted into it (`count_batch`): only when no later check is to run. Settles the batch in
    place and returns it."""
    columns = batch.columns
    outcomes, reasons, dup_keys = columns[_OUTCOME], columns[_REASONS], columns[_DUP_KEY]
    rejected = Outcome.REJECTED.value
    duplicate = Reason.DUPLICATE_ACTIVITY
    for index, digest in enumerate(batch.candidates):
        if digest is None:
            continue
        if digest in keys:
            outcomes[index] = rejected
            reasons[index] = _with_reason(reasons[index], duplicate)
        elif outcomes[index] != rejected:
            keys.add(digest)
            dup_keys[index] = digest
    if summary is not None:
        count_batch(batch, summary)
    return batch


def settle_pathway(
    batch: AssessedBatch, *, commissioner_code: str, spells: InMemorySpellIndex
) -> AssessedBatch:
    """Checks 14 and 15 on a batch whose duplicates are settled, line by line in order, as
    `decide_pathway_line` decides them: a line that gains a reason keeps it beside any other, and a
    valid line becomes a query. `spells` holds the earlier countable spells of the batch's patients
    (earlier invoices of the commissioner, any provider, and earlier batches of this one) and grows
    with the batch's own; those are also listed in `batch.spell_rows` to be stored. In place;
    returns it."""
    columns = batch.columns
    outcomes, reasons, line_nos, seqs = columns[_OUTCOME], columns[_REASONS], columns[_LINE_NO], columns[0]
    rejected, valid, query = Outcome.REJECTED.value, Outcome.VALID.value, Outcome.QUERY.value
    commissioner = commissioner_code.upper()
    overlapping, during = Reason.OVERLAPPING_SPELL, Reason.ATTENDANCE_DURING_SPELL
    # A million lines are settled in the one service process, so each step a line counts: one dict
    # look-up decides the lines of patients with no earlier spell, and the rule runs for the others.
    patients = spells.patients(commissioner)
    earlier_of, append = patients.get, batch.spell_rows.append
    texts = _StoredForms[date, str](date.isoformat)
    for index, nhs_token, activity_date, discharge in batch.pathway:
        outcome = outcomes[index]
        earlier = earlier_of(nhs_token)
        # pathway_reason's two checks, called directly.
        if earlier and (
            check_attendance_during_spell(activity_date, earlier)
            if discharge is None
            else check_overlapping_spell(activity_date, discharge, earlier)
        ):
            reasons[index] = _with_reason(reasons[index], during if discharge is None else overlapping)
            if outcome == valid:
                outcomes[index] = query
        if discharge is not None and outcome != rejected:
            if earlier is None:
                patients[nhs_token] = [(activity_date, discharge)]
            else:
                earlier.append((activity_date, discharge))
            append(
                (
                    seqs[index],
                    line_nos[index],
                    commissioner,
                    nhs_token,
                    texts[activity_date],
                    texts[discharge],
                )
            )
    return batch


def count_batch(batch: AssessedBatch, summary: SummaryAccumulator) -> None:
    """Counts a settled batch's lines into the invoice's summary (outcomes and amounts)."""
    add = summary.add_pennies
    for outcome, claimed in zip(batch.columns[_OUTCOME], batch.columns[_CLAIMED], strict=True):
        add(outcome, claimed)


def settle_batch(
    batch: AssessedBatch,
    *,
    keys: set[str],
    commissioner_code: str,
    spells: InMemorySpellIndex,
    summary: SummaryAccumulator,
) -> AssessedBatch:
    """Every check that needs earlier lines, in the order the spec decides them, then the summary:
    duplicates first, since a line rejected as a duplicate is no earlier spell."""
    settle_duplicates(batch, keys)
    settle_pathway(batch, commissioner_code=commissioner_code, spells=spells)
    count_batch(batch, summary)
    return batch
