"""No Stripe key, no card rail: what would call Stripe is refused at once with 409 ``rail_not_configured`` and
records nothing (rather than a pending purchase and a 504 once Stripe's client gives up)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from tests.card.conftest import Card, make_card


@pytest.fixture
def card_off(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine, stripe_secret_key=SecretStr(""))


def test_a_purchase_without_a_stripe_key_is_refused_at_once_and_records_nothing(card_off: Card) -> None:
    card = card_off
    assert not card.settings.stripe_configured
    customer = card.customer()
    before = card.snapshot()

    response = card.buy(customer, save_card=True)

    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "rail_not_configured"
    assert card.snapshot() == before
    assert card.stripe.requests == []
    # The same again (a retry with the same key) is refused the same way.
    assert card.buy(customer).json()["error"]["code"] == "rail_not_configured"
    assert card.count("card_purchases") == 0


def test_without_a_stripe_key_auto_recharge_cannot_be_turned_on_but_can_be_turned_off(card_off: Card) -> None:
    card = card_off
    customer = card.customer()
    settings = {"threshold_credits": 100, "pack": "starter"}

    on = card.client.put("/v1/card/auto-recharge", json={"enabled": True, **settings}, headers=customer.headers)
    assert on.status_code == 409, on.text
    assert on.json()["error"]["code"] == "rail_not_configured"
    assert card.count("card_auto_recharge") == 0

    off = card.client.put("/v1/card/auto-recharge", json={"enabled": False, **settings}, headers=customer.headers)
    assert off.status_code == 200, off.text
    assert off.json()["enabled"] is False
    assert card.stripe.requests == []


def test_without_a_stripe_key_the_success_page_does_not_call_stripe(card_off: Card) -> None:
    card = card_off
    customer = card.customer()
    response = card.client.post("/v1/card/purchases/1/confirm", json={"session_id": "cs_x"}, headers=customer.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "rail_not_configured"
    assert card.stripe.requests == []


def test_without_a_stripe_key_an_unauthenticated_purchase_is_still_a_401(card_off: Card) -> None:
    response = card_off.client.post("/v1/card/purchases", json={"pack": "starter"}, headers={"Idempotency-Key": "k"})
    assert response.status_code == 401


def test_without_a_stripe_key_signed_webhooks_are_still_taken_and_processed(card_off: Card) -> None:
    card = card_off
    event = card.stripe.event("checkout.session.expired", {"id": "cs_gone", "object": "checkout.session"})
    assert card.deliver(event).status_code == 200
    assert card.inbox_event(event["id"]).outcome == "unknown_session_expired"


def test_without_a_stripe_key_an_admin_can_still_send_a_stored_event_round_again(card_off: Card) -> None:
    card = card_off
    event = card.stripe.event("charge.refunded", {"id": "cs_1", "object": "checkout.session"})
    card.deliver_ok(event)
    retried = card.client.post(f"/v1/admin/card/webhook-events/{event['id']}/retry", headers=card.admin)
    assert retried.status_code == 200, retried.text
    assert retried.json()["outcome"] == "unreadable_object"
