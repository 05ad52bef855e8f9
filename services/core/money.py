"""Every conversion between credits, US cents and USDC base units lives here.

100 credits = 1.00 USD = 1 USDC, so 1 credit = 1 cent = 10,000 USDC base units (USDC has 6 decimals).
Rounding rule: USDC is converted down to whole credits and the remainder (in USDC base units) is returned to
the caller, who carries it; nothing is ever rounded away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import ColumnElement

USDC_DECIMALS = 6
CENTS_PER_CREDIT = 1
USDC_UNITS_PER_CREDIT = 10_000  # 10 ** (USDC_DECIMALS - 2)
CREDITS_PER_USD = 100


def credits_to_cents(amount_credits: int) -> int:
    return amount_credits * CENTS_PER_CREDIT


def cents_to_credits(amount_cents: int) -> int:
    """Cents convert exactly (one credit per cent)."""
    return amount_cents // CENTS_PER_CREDIT


def cents_to_credits_sql(amount_cents: ColumnElement[int]) -> ColumnElement[int]:
    """:func:`cents_to_credits` as a SQL expression (integer division on both databases)."""
    return amount_cents // CENTS_PER_CREDIT


def credits_to_usdc_units(amount_credits: int) -> int:
    return amount_credits * USDC_UNITS_PER_CREDIT


def usdc_units_to_credits(amount_usdc_units: int) -> tuple[int, int]:
    """Whole credits and the remainder in USDC base units (always 0 <= remainder < 10,000)."""
    if amount_usdc_units < 0:
        raise ValueError("a USDC amount cannot be negative")
    return divmod(amount_usdc_units, USDC_UNITS_PER_CREDIT)


def usdc_units_to_credits_sql(amount_usdc_units: ColumnElement[int]) -> ColumnElement[int]:
    """The whole credits of :func:`usdc_units_to_credits` as a SQL expression (the remainder is the carry)."""
    return amount_usdc_units // USDC_UNITS_PER_CREDIT


def share_of_credits(amount_credits: int, part_cents: int, whole_cents: int) -> int:
    """The credits that ``part_cents`` of a ``whole_cents`` payment bought (a partial refund's share of a lot).

    Rounded down, in the customer's favour: a refund of the whole payment is always exactly ``amount_credits``,
    and at 1 credit per cent every share is exact anyway.
    """
    if whole_cents <= 0:
        raise ValueError("the whole payment must be positive")
    if not 0 <= part_cents <= whole_cents:
        raise ValueError("a part must lie between nothing and the whole payment")
    return amount_credits * part_cents // whole_cents


def format_usd(amount_cents: int) -> str:
    sign = "-" if amount_cents < 0 else ""
    whole, cents = divmod(abs(amount_cents), 100)
    return f"{sign}${whole:,}.{cents:02d}"


def format_usdc(amount_usdc_units: int) -> str:
    """``12.5`` USDC from base units, exact (every decimal kept that is not a trailing zero; at least two)."""
    sign = "-" if amount_usdc_units < 0 else ""
    whole, fraction = divmod(abs(amount_usdc_units), 10**USDC_DECIMALS)
    digits = f"{fraction:0{USDC_DECIMALS}d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole:,}.{digits} USDC"
