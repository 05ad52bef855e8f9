"""The card that paid, read from Stripe's objects as they come (an expanded charge, or only its id), and named as a
receipt names it."""

from __future__ import annotations

from typing import Any

from services.card.stripe_objects import CardDetails, CheckoutSessionData, PaymentIntentData, card_label
from tests.card.stripe_fake import fixture


def _charge(**card: Any) -> dict[str, Any]:
    charge = fixture("charge")
    charge["payment_method_details"]["card"] |= card
    return charge


def test_the_card_is_read_from_an_expanded_charge_and_not_from_an_id() -> None:
    intent = fixture("payment_intent") | {"latest_charge": _charge(brand="mastercard", last4="4444")}
    assert PaymentIntentData.parse(intent).card == CardDetails("mastercard", "4444")
    assert PaymentIntentData.parse(intent).latest_charge == intent["latest_charge"]["id"]
    assert PaymentIntentData.parse(fixture("payment_intent") | {"latest_charge": "ch_1"}).card is None
    session = fixture("checkout_session") | {"payment_intent": intent}
    parsed = CheckoutSessionData.parse(session)
    assert (parsed.payment_intent, parsed.card) == (intent["id"], CardDetails("mastercard", "4444"))
    assert CheckoutSessionData.parse(fixture("checkout_session") | {"payment_intent": "pi_1"}).card is None


def test_a_charge_that_is_not_a_card_or_has_odd_fields_gives_no_card() -> None:
    assert CardDetails.of_charge(fixture("charge")) == CardDetails("visa", "4242")
    assert CardDetails.of_charge(fixture("charge") | {"payment_method_details": {"type": "us_bank_account"}}) is None
    assert CardDetails.of_charge(_charge(last4="42")) is None
    assert CardDetails.of_charge(_charge(last4="abcd")) is None
    assert CardDetails.of_charge(_charge(brand=None)) is None
    assert CardDetails.of_charge(_charge(brand="x" * 33)) is None
    assert CardDetails.of_charge("ch_1") is None


def test_cards_are_named_as_customers_know_them() -> None:
    assert card_label("visa", "4242") == "Visa ending 4242"
    assert card_label("amex", "8431") == "American Express ending 8431"
    assert card_label("cartes_bancaires", "1001") == "Cartes Bancaires ending 1001"
    assert card_label("some_new_brand", "0005") == "Some New Brand ending 0005"
    assert card_label("unknown", "0005") == "Card ending 0005"
    assert card_label(None, "4242") is None
    assert card_label("visa", None) is None
