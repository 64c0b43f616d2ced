"""The validation engine: prepare a line, run the checks, derive the outcome, summarise an invoice."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from cef_api.validation.prepared import PreparedLine, prepare_line, stored_codes
from cef_api.validation.rules import LINE_CHECKS, PATIENT_CHECKS, LineContext, verdict_for
from cef_api.validation.rules.pathway import SpellIndex, decide_pathway_line, pathway_fact
from cef_api.validation.rules.pricing import EXACT, PENNY
from cef_api.validation.types import (
    DuplicateIndex,
    InvoiceHeader,
    LineOutcome,
    Outcome,
    Reason,
    ReferenceData,
)
from cef_common.errors import Unprocessable

__all__ = [
    "InvoiceSummary",
    "PreparedLine",
    "SummaryAccumulator",
    "UnknownProviderError",
    "check_line",
    "prepare_line",
    "require_market_forces_factor",
    "summarise",
    "validate_line",
]

_MALFORMED: tuple[Reason, ...] = (Reason.MALFORMED_LINE,)


class UnknownProviderError(Unprocessable):
    """The invoice's provider has no market forces factor in the providers reference data."""

    code = "provider-unknown"
    title = "Provider not in the reference data"


def require_market_forces_factor(header: InvoiceHeader, reference: ReferenceData) -> Decimal:
    """The provider's market forces factor; UnknownProviderError (422) when the providers file lacks it.

    Call it once before reading the backing data, so an invoice that cannot be priced is refused
    before anything is kept.
    """
    factor = reference.market_forces_factor(header.provider_code.upper())
    if factor is None:
        raise UnknownProviderError(
            f"Provider {header.provider_code!r} is not in the providers reference data, so its lines "
            "cannot be priced: load a providers file with its market_forces_factor, or check provider_code.",
            extra={"provider_code": header.provider_code},
        )
    return factor


def validate_line(
    line: PreparedLine,
    *,
    nhs_token: str | None,
    dob_token: str | None,
    header: InvoiceHeader,
    reference: ReferenceData,
    duplicates: DuplicateIndex,
    market_forces_factor: Decimal | None = None,
    spells: SpellIndex | None = None,
) -> LineOutcome:
    """Every check of validation-rules.md on one prepared line, in order; adds its DuplicateKey to
    `duplicates` when the outcome is not rejected.

    `spells`: the earlier countable spells of the replay (every invoice before this one, any
    provider, and the lines above this one), for a caller that validates every line in submission
    order in memory. With it, the pathway checks (14, 15) run last, after the duplicate check, and
    the line's own spell joins the index when it counts. Without it they do not run here: the
    service settles them per batch (`invoices.batches.settle_batch`).

    `nhs_token` is the token of `line.nhs_number` (required when that is set), `dob_token` of
    `line.date_of_birth.isoformat()`. `market_forces_factor`: the provider's, when the caller has
    looked it up for many lines; otherwise looked up here, raising UnknownProviderError when the
    provider has no MFF.
    """
    line_ref, hrg_code, point_of_delivery, service_code = stored_codes(line)
    if line.malformed:
        return LineOutcome(
            line.line_no,
            line_ref,
            Outcome.REJECTED,
            _MALFORMED,
            None,
            None,
            line.claimed_amount,
            nhs_token,
            line.activity_date,
            hrg_code,
            point_of_delivery,
            service_code,
            None,
        )
    ctx = check_line(
        line,
        nhs_token=nhs_token,
        dob_token=dob_token,
        header=header,
        reference=reference,
        duplicates=duplicates,
        market_forces_factor=market_forces_factor,
    )
    verdict = verdict_for(ctx.reasons)
    if spells is not None:
        fact = pathway_fact(line, nhs_token)
        if fact is not None:
            reason = decide_pathway_line(
                fact,
                commissioner_code=header.commissioner_code,
                rejected=verdict.outcome is Outcome.REJECTED,
                spells=spells,
            )
            if reason is not None:
                # Only ever a query reason: a line's rejection, and so its duplicate key, stand.
                verdict = verdict_for((*ctx.reasons, reason))
    duplicate_key = ctx.duplicate_key if verdict.outcome is not Outcome.REJECTED else None
    if duplicate_key is not None:
        duplicates.add(duplicate_key)
    return LineOutcome(
        line.line_no,
        line_ref,
        verdict.outcome,
        verdict.reasons,
        ctx.responsible_commissioner,
        ctx.expected_amount,
        line.claimed_amount,
        nhs_token,
        line.activity_date,
        hrg_code,
        point_of_delivery,
        service_code,
        duplicate_key,
    )


def check_line(
    line: PreparedLine,
    *,
    nhs_token: str | None,
    dob_token: str | None,
    header: InvoiceHeader,
    reference: ReferenceData,
    duplicates: DuplicateIndex,
    market_forces_factor: Decimal | None = None,
) -> LineContext:
    """Checks 2-9 on a line that passed check 1, as validate_line runs them: the context they filled
    in, its reasons in the order found (`verdict_for` sorts them). Adds nothing to `duplicates`, so
    a caller judging lines apart from their order (batches.assess_batch) can apply check 9 later."""
    # The patient checks run only on a valid NHS number, and then need its token.
    patient_token = nhs_token if line.nhs_number is not None else None
    if line.nhs_number is not None and patient_token is None:
        raise ValueError("validate_line needs the nhs_token of a line whose NHS number is valid")
    ctx = LineContext(
        line,
        header,
        reference,
        duplicates,
        market_forces_factor
        if market_forces_factor is not None
        else require_market_forces_factor(header, reference),
        patient_token,
        dob_token,
    )
    for check in LINE_CHECKS:
        check(ctx)
    if patient_token is not None:
        ctx.patient = reference.patient(patient_token)
        for check in PATIENT_CHECKS:
            check(ctx)
    return ctx


@dataclass(slots=True)
class InvoiceSummary:
    """Counts of each outcome; claimed_amount sums every amount matching the pattern (malformed lines
    included), validated_amount the amounts of valid lines."""

    lines: int
    valid: int
    query: int
    rejected: int
    claimed_amount: Decimal
    validated_amount: Decimal


class SummaryAccumulator:
    """Builds an InvoiceSummary one LineOutcome at a time (or, from stored rows, one outcome and
    claimed amount in pennies at a time), for streaming validation."""

    __slots__ = (
        "_lines",
        "_valid",
        "_query",
        "_rejected",
        "_claimed",
        "_validated",
        "_claimed_pennies",
        "_validated_pennies",
    )

    def __init__(self) -> None:
        self._lines = self._valid = self._query = self._rejected = 0
        self._claimed = Decimal("0.00")
        self._validated = Decimal("0.00")
        # Python integers: exact at any size, as the Decimal sums are.
        self._claimed_pennies = self._validated_pennies = 0

    def add_pennies(self, outcome: str, claimed_pennies: int | None) -> None:
        """`add` for a line known by its outcome's value and its claimed amount in whole pennies."""
        self._lines += 1
        if claimed_pennies is not None:
            self._claimed_pennies += claimed_pennies
        if outcome == "valid":
            self._valid += 1
            if claimed_pennies is not None:
                self._validated_pennies += claimed_pennies
        elif outcome == "query":
            self._query += 1
        else:
            self._rejected += 1

    def add(self, outcome: LineOutcome) -> None:
        self._lines += 1
        # Exact sums: the amount pattern puts no bound on the digits a provider may send.
        if outcome.claimed_amount is not None:
            self._claimed = EXACT.add(self._claimed, outcome.claimed_amount)
        if outcome.outcome is Outcome.VALID:
            self._valid += 1
            if outcome.claimed_amount is not None:
                self._validated = EXACT.add(self._validated, outcome.claimed_amount)
        elif outcome.outcome is Outcome.QUERY:
            self._query += 1
        else:
            self._rejected += 1

    def result(self) -> InvoiceSummary:
        claimed = EXACT.add(self._claimed, EXACT.scaleb(Decimal(self._claimed_pennies), -2))
        validated = EXACT.add(self._validated, EXACT.scaleb(Decimal(self._validated_pennies), -2))
        return InvoiceSummary(
            lines=self._lines,
            valid=self._valid,
            query=self._query,
            rejected=self._rejected,
            claimed_amount=claimed.quantize(PENNY, context=EXACT),
            validated_amount=validated.quantize(PENNY, context=EXACT),
        )


def summarise(outcomes: Iterable[LineOutcome]) -> InvoiceSummary:
    """The InvoiceSummary of a whole invoice's outcomes."""
    accumulator = SummaryAccumulator()
    for outcome in outcomes:
        accumulator.add(outcome)
    return accumulator.result()
