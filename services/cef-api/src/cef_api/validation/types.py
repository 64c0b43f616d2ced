"""The validation engine's vocabulary: what goes in, what comes out, and what it asks of the
reference data. Pure data: no database, no HTTP. The service layer adapts its storage to
`ReferenceData` and its duplicate store to `DuplicateIndex`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    VALID = "valid"
    QUERY = "query"
    REJECTED = "rejected"


class Reason(StrEnum):
    MALFORMED_LINE = "MALFORMED_LINE"
    NHS_NUMBER_INVALID = "NHS_NUMBER_INVALID"
    ACTIVITY_OUTSIDE_PERIOD = "ACTIVITY_OUTSIDE_PERIOD"
    TARIFF_NOT_FOUND = "TARIFF_NOT_FOUND"
    PRICE_MISMATCH = "PRICE_MISMATCH"
    PATIENT_NOT_FOUND = "PATIENT_NOT_FOUND"
    DOB_MISMATCH = "DOB_MISMATCH"
    RESIDENCE_UNKNOWN = "RESIDENCE_UNKNOWN"
    NOT_RESPONSIBLE_COMMISSIONER = "NOT_RESPONSIBLE_COMMISSIONER"
    DUPLICATE_ACTIVITY = "DUPLICATE_ACTIVITY"
    # v2 (validation-rules.md, checks 10-16)
    PRIVATE_PATIENT = "PRIVATE_PATIENT"
    CHARGEABLE_OVERSEAS_VISITOR = "CHARGEABLE_OVERSEAS_VISITOR"
    ORIGINATING_COMMISSIONER_UNKNOWN = "ORIGINATING_COMMISSIONER_UNKNOWN"
    CROSS_BORDER_RESIDENT = "CROSS_BORDER_RESIDENT"
    OVERLAPPING_SPELL = "OVERLAPPING_SPELL"
    ATTENDANCE_DURING_SPELL = "ATTENDANCE_DURING_SPELL"
    PRIOR_APPROVAL_MISSING = "PRIOR_APPROVAL_MISSING"


@dataclass(frozen=True, slots=True)
class InvoiceHeader:
    invoice_number: str
    provider_code: str
    commissioner_code: str
    invoice_date: date
    period_start: date
    period_end: date


@dataclass(frozen=True, slots=True)
class TariffEntry:
    hrg_code: str
    point_of_delivery: str
    price: Decimal
    trim_point_days: int
    excess_bed_day_price: Decimal


@dataclass(frozen=True, slots=True)
class TracePatient:
    """A patient in the trace, as the CEF holds it: tokens and the district, never identifiers."""

    dob_token: str | None
    outward_code: str | None


@dataclass(frozen=True, slots=True)
class Registration:
    gp_practice_code: str
    registered_from: date
    registered_to: date | None  # None: still registered


@dataclass(frozen=True, slots=True)
class OriginatingCommissioner:
    """A row of the originating commissioners register (v2): who placed the patient under this care."""

    commissioner_code: str
    valid_from: date
    valid_to: date | None  # None: open


class ReferenceData(Protocol):
    """Lookups the rules need; codes are passed upper-cased, patients by NHS-number token.

    The v2 datasets are optional: one that is not loaded answers as if it held no rows, except that
    `contracts_loaded` tells a `contracts` dataset with no rows from none at all (check 16)."""

    def tariff(self, hrg_code: str, point_of_delivery: str) -> TariffEntry | None: ...
    def market_forces_factor(self, provider_code: str) -> Decimal | None: ...
    def patient(self, nhs_token: str) -> TracePatient | None: ...
    def registrations(self, nhs_token: str) -> list[Registration]: ...
    def practice_commissioner(self, gp_practice_code: str) -> str | None: ...
    def district_commissioner(self, outward_code: str) -> str | None: ...
    def specialised_commissioner(self, service_code: str) -> str | None: ...
    # v2
    def originating_commissioners(self, nhs_token: str, care_basis: str) -> list[OriginatingCommissioner]:
        """The patient's rows of that care basis (`S117`, `CHC`), whatever their dates."""
        ...

    def devolved_nation(self, outward_code: str) -> str | None:
        """`W`, `S` or `N` for an outward code outside England; None otherwise."""
        ...

    def contracts_loaded(self) -> bool: ...
    def contract_covers(self, commissioner_code: str, provider_code: str, on: date) -> bool:
        """Whether a contract of the commissioner with the provider covers the day (inclusive)."""
        ...

    def prior_approval(self, commissioner_code: str, reference_upper: str, nhs_token: str, on: date) -> bool:
        """Whether an approval of the commissioner with that reference (upper-cased), for that
        patient, is valid on the day (inclusive)."""
        ...


# Not frozen: building frozen dataclasses costs ~1 µs each on the per-line hot path. Treat
# instances as immutable all the same; DuplicateKey keeps a hash for set membership.
@dataclass(slots=True, unsafe_hash=True)
class DuplicateKey:
    provider_code: str
    commissioner_code: str
    nhs_token: str
    activity_date: date
    hrg_code: str
    point_of_delivery: str


class DuplicateIndex(Protocol):
    """Keys of earlier lines whose outcome was not `rejected` (earlier invoices and lines above)."""

    def __contains__(self, key: DuplicateKey) -> bool: ...
    def add(self, key: DuplicateKey) -> None: ...


@dataclass(slots=True, unsafe_hash=True)
class LineOutcome:
    """What the CEF decided about one line. Holds no identifier: tokens at most."""

    line_no: int  # 1-based data row number in the file (header excluded)
    line_ref: str | None
    outcome: Outcome
    reasons: tuple[Reason, ...]  # sorted by value
    responsible_commissioner: str | None
    expected_amount: Decimal | None
    claimed_amount: Decimal | None  # the amount when it matches the amount pattern
    nhs_token: str | None
    activity_date: date | None
    hrg_code: str | None
    point_of_delivery: str | None
    service_code: str | None
    duplicate_key: DuplicateKey | None  # set when the line counts for later duplicates
