import pytest

from services.core.money import (
    USDC_UNITS_PER_CREDIT,
    cents_to_credits,
    credits_to_cents,
    credits_to_usdc_units,
    format_usd,
    usdc_units_to_credits,
)


def test_one_credit_is_one_cent():
    assert credits_to_cents(1_234) == 1_234
    assert cents_to_credits(1_234) == 1_234


def test_one_usdc_buys_one_hundred_credits():
    assert usdc_units_to_credits(1_000_000) == (100, 0)
    assert credits_to_usdc_units(100) == 1_000_000


def test_usdc_converts_down_to_whole_credits_and_returns_the_remainder():
    amount_usdc_units = 1_234_567

    credits, remainder_usdc_units = usdc_units_to_credits(amount_usdc_units)

    assert (credits, remainder_usdc_units) == (123, 4_567)
    assert credits_to_usdc_units(credits) + remainder_usdc_units == amount_usdc_units


@pytest.mark.parametrize("amount_usdc_units", [0, 1, 9_999, 10_000, 10_001, 987_654_321])
def test_usdc_conversion_never_rounds_anything_away(amount_usdc_units):
    credits, remainder_usdc_units = usdc_units_to_credits(amount_usdc_units)

    assert 0 <= remainder_usdc_units < USDC_UNITS_PER_CREDIT
    assert credits * USDC_UNITS_PER_CREDIT + remainder_usdc_units == amount_usdc_units


def test_negative_usdc_amount_is_refused():
    with pytest.raises(ValueError, match="negative"):
        usdc_units_to_credits(-1)


@pytest.mark.parametrize(
    ("amount_cents", "text"),
    [(0, "$0.00"), (5, "$0.05"), (100, "$1.00"), (123_456, "$1,234.56"), (-5, "-$0.05"), (-123_456, "-$1,234.56")],
)
def test_format_usd(amount_cents, text):
    assert format_usd(amount_cents) == text
