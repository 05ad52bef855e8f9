"""Stripe's objects are stored digit for digit: a decimal field (a Checkout Session's ``currency_conversion.fx_rate``,
which the SDK turns into ``Decimal``) no longer stops the sync, and a number with more digits than a float holds (a
balance transaction's ``exchange_rate``) reaches the inbox and finance's mirror exactly as Stripe sent it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from services.card import stripe_json
from services.card.flows import sync
from services.core.clock import utcnow
from services.finance.flows.stripe_pull import balance_transactions_table, checkout_sessions_table, pull_stripe
from tests.card.conftest import Card

# More digits than a float keeps, as Stripe may send them.
FX_RATE = "0.921234567890123456789"
EXCHANGE_RATE = Decimal("1.08765432109876543210987")


def _converted(card: Card, session_id: str) -> dict[str, Any]:
    """The customer paid in another currency: Stripe converted it (``fx_rate`` is a decimal string)."""
    card.stripe.sessions[session_id]["currency_conversion"] = {
        "amount_subtotal": 921,
        "amount_total": 921,
        "fx_rate": FX_RATE,
        "source_currency": "eur",
    }
    return card.stripe.pay(session_id)


def test_sync_stores_an_event_with_a_decimal_field_exactly_and_mints(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    # The webhook is lost; only Stripe's event list has it.
    event = card.stripe.event("checkout.session.completed", _converted(card, purchase["checkout_session_id"]))

    result = sync.sync(card.engine, card.gateway, card.settings, utcnow())

    assert result.events_stored == 1
    assert card.available(customer.account_id) == 1_000
    stored = card.inbox_event(event["id"])
    assert stored.outcome == "minted"
    conversion = json.loads(stored.payload)["data"]["object"]["currency_conversion"]
    assert conversion["fx_rate"] == FX_RATE
    assert f'"fx_rate":"{FX_RATE}"' in stored.payload


def test_a_sync_pass_goes_on_past_an_event_with_a_decimal_field_to_the_ones_after_it(card: Card) -> None:
    customer = card.customer()
    first = card.bought(customer, "a", pack="starter")
    second = card.bought(customer, "b", pack="pro")
    card.stripe.event("checkout.session.completed", _converted(card, first["checkout_session_id"]))
    card.stripe.event("checkout.session.completed", card.stripe.pay(second["checkout_session_id"]))

    assert sync.sync(card.engine, card.gateway, card.settings, utcnow()).events_stored == 2

    assert card.available(customer.account_id) == 500 + 2_500


def test_finance_mirrors_stripe_records_with_every_digit(card: Card) -> None:
    purchase = card.bought(card.customer())
    _converted(card, purchase["checkout_session_id"])
    charge = card.stripe.charge_of(purchase["checkout_session_id"])
    card.stripe.balance_transactions[charge["balance_transaction"]]["exchange_rate"] = EXCHANGE_RATE
    now = datetime.now(UTC)

    pull_stripe(card.engine, card.gateway, window_start=now - timedelta(hours=1), window_end=now + timedelta(hours=1))

    with card.engine.connect() as conn:
        [transaction] = conn.execute(select(balance_transactions_table.c.raw)).scalars()
        [session] = conn.execute(select(checkout_sessions_table.c.raw)).scalars()
    assert f'"exchange_rate":{EXCHANGE_RATE}' in transaction
    assert stripe_json.loads(transaction)["exchange_rate"] == EXCHANGE_RATE
    assert json.loads(session)["currency_conversion"]["fx_rate"] == FX_RATE


def test_stripe_json_writes_back_exactly_what_it_read() -> None:
    text = '{"a":1.10,"b":[-2E+5,12345678901234567890,0.1000000000000000000001],"c":"\\u00e9","d":null,"e":true}'
    decoded = stripe_json.loads(text)
    assert decoded["a"] == Decimal("1.10")
    assert stripe_json.dumps(decoded) == text
    assert stripe_json.dumps({"z": 1, "a": [Decimal("2.50")]}, sort_keys=True) == '{"a":[2.50],"z":1}'
