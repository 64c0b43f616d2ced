"""What every check sees of one line, and where it records what it found."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, TypeAlias

from cef_api.validation.types import (
    DuplicateIndex,
    DuplicateKey,
    InvoiceHeader,
    Reason,
    ReferenceData,
    TracePatient,
)

if TYPE_CHECKING:
    # Imported for annotations only: prepared imports the malformed rule from this package.
    from cef_api.validation.prepared import PreparedLine


@dataclass(slots=True)
class LineContext:
    """One line under validation. Checks read the inputs and append to `reasons` or set the findings."""

    line: PreparedLine
    header: InvoiceHeader
    reference: ReferenceData
    duplicates: DuplicateIndex
    market_forces_factor: Decimal  # of the invoice's provider
    nhs_token: str | None  # set whenever line.nhs_number is (the patient checks need it)
    dob_token: str | None
    patient: TracePatient | None = None  # the trace entry, looked up once before the patient checks
    reasons: list[Reason] = field(default_factory=list)
    expected_amount: Decimal | None = None
    responsible_commissioner: str | None = None
    # Which "Who Pays?" rule settled the line (who_pays.RULE_NAMES: "specialised", "originating",
    # "registration", "residence"), also when it settled it with no commissioner; None when none did.
    decided_by: str | None = None
    duplicate_key: DuplicateKey | None = None


Check: TypeAlias = Callable[[LineContext], None]
