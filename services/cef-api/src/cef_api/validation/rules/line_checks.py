"""Checks 2-5, run on every line that is not malformed: NHS number, period, tariff and price."""

from __future__ import annotations

from cef_api.validation.rules.context import LineContext
from cef_api.validation.rules.pricing import expected_price
from cef_api.validation.types import Reason


def check_nhs_number(ctx: LineContext) -> None:
    """2. NHS_NUMBER_INVALID: missing, not 10 digits or 3-3-4, or failing Modulus 11 (see nhs_number)."""
    if ctx.line.nhs_number is None:
        ctx.reasons.append(Reason.NHS_NUMBER_INVALID)


def check_activity_period(ctx: LineContext) -> None:
    """3. ACTIVITY_OUTSIDE_PERIOD: activity_date before period_start or after period_end (inclusive)."""
    activity_date = ctx.line.activity_date
    header = ctx.header
    if activity_date is not None and not (header.period_start <= activity_date <= header.period_end):
        ctx.reasons.append(Reason.ACTIVITY_OUTSIDE_PERIOD)


def check_tariff_and_price(ctx: LineContext) -> None:
    """4. TARIFF_NOT_FOUND and 5. PRICE_MISMATCH; the expected price is reported whenever a tariff exists.

    The amount must equal the expected price to the penny (`1234.5` equals `1234.50`).
    """
    line = ctx.line
    if line.hrg_code is None or line.point_of_delivery is None or line.activity_date is None:
        return  # unreachable for a line that passed check 1; keeps the check total on its own
    tariff = ctx.reference.tariff(line.hrg_code, line.point_of_delivery)
    if tariff is None:
        ctx.reasons.append(Reason.TARIFF_NOT_FOUND)
        return
    expected = expected_price(
        tariff, ctx.market_forces_factor, line.point_of_delivery, line.activity_date, line.discharge_date
    )
    ctx.expected_amount = expected
    if line.claimed_amount != expected:
        ctx.reasons.append(Reason.PRICE_MISMATCH)
