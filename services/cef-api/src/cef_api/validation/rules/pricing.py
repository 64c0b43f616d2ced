"""The expected price of a line: tariff × the provider's market forces factor, plus excess bed days."""

from __future__ import annotations

from datetime import date
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_UP, Context, Decimal
from typing import Final

from cef_api.validation.types import TariffEntry
from cef_api.validation.values import SPELL_POINTS_OF_DELIVERY

PENNY: Final = Decimal("0.01")
# Money arithmetic must be exact whatever the thread's decimal context: products and sums are never
# rounded to a precision, only to pennies where the spec says so.
EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, rounding=ROUND_HALF_UP)


def to_pennies(amount: Decimal) -> Decimal:
    """Round half-up to a whole penny (0.005 → 0.01), as the spec requires at each step."""
    return amount.quantize(PENNY, rounding=ROUND_HALF_UP, context=EXACT)


def excess_bed_days(
    tariff: TariffEntry, point_of_delivery: str, activity_date: date, discharge_date: date | None
) -> int:
    """Days of a spell beyond the trim point: `max(0, length_of_stay − trim_point_days)` for EL/NEL.

    Length of stay is discharge − admission in days, 0 without a discharge date; other points of
    delivery have no excess days.
    """
    if point_of_delivery not in SPELL_POINTS_OF_DELIVERY or discharge_date is None:
        return 0
    return max(0, (discharge_date - activity_date).days - tariff.trim_point_days)


def expected_price(
    tariff: TariffEntry,
    market_forces_factor: Decimal,
    point_of_delivery: str,
    activity_date: date,
    discharge_date: date | None,
) -> Decimal:
    """`round(price × MFF) + excess_days × round(excess_bed_day_price × MFF)`, pennies half-up each step."""
    base, excess_day = adjusted_prices(tariff, market_forces_factor)
    excess_days = excess_bed_days(tariff, point_of_delivery, activity_date, discharge_date)
    return EXACT.add(base, EXACT.multiply(excess_days, excess_day)) if excess_days else base


# id(tariff) → (tariff, MFF, base, excess day): the rounded products of a tariff row for a provider,
# reused by every line of that HRG and point of delivery. The tariff is kept in the value so its id
# cannot be reused while cached.
_ADJUSTED: dict[int, tuple[TariffEntry, Decimal, Decimal, Decimal]] = {}
_ADJUSTED_LIMIT: Final = 50_000


def adjusted_prices(tariff: TariffEntry, market_forces_factor: Decimal) -> tuple[Decimal, Decimal]:
    """`(round(price × MFF), round(excess_bed_day_price × MFF))`, each to the penny half-up."""
    cached = _ADJUSTED.get(id(tariff))
    if cached is not None and cached[0] is tariff and cached[1] == market_forces_factor:
        return cached[2], cached[3]
    base = to_pennies(EXACT.multiply(tariff.price, market_forces_factor))
    excess_day = to_pennies(EXACT.multiply(tariff.excess_bed_day_price, market_forces_factor))
    if len(_ADJUSTED) >= _ADJUSTED_LIMIT:
        _ADJUSTED.clear()
    _ADJUSTED[id(tariff)] = (tariff, market_forces_factor, base, excess_day)
    return base, excess_day
