"""Purchases that never complete expire: Stripe's ``checkout.session.expired`` does it, and when that never arrives
(and the sync's session list does not settle it), our own deadline does: the session's ``expires_at`` plus a grace,
after which the sync job asks Stripe and settles the purchase as its session is. Expired purchases no longer show as
waiting in the customer's purchase history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.card import repository as repo
from services.card.flows import sync
from services.core.settings import Settings
from tests.card.conftest import Card, Customer


def _recent_only(card: Card) -> Settings:
    """The sync's session list looks back an hour only, so what it settles here is settled by the deadline."""
    return card.settings.model_copy(update={"card_sync_lookback_seconds": 3_600})


def _deadline(card: Card, purchase: dict[str, Any]) -> datetime:
    expires_at = card.stripe.sessions[purchase["checkout_session_id"]]["expires_at"]
    return datetime.fromtimestamp(expires_at, UTC) + timedelta(seconds=card.settings.card_checkout_expiry_grace_seconds)


def _history_status(card: Card, customer: Customer, purchase_id: int) -> str:
    items = card.client.get("/v1/purchases", headers=customer.headers).json()["data"]
    [status] = [item["status"] for item in items if item["rail"] == "card" and item["id"] == purchase_id]
    return str(status)


def _looked_up(card: Card, purchase: dict[str, Any]) -> int:
    return len(card.stripe.sent("GET", f"/v1/checkout/sessions/{purchase['checkout_session_id']}"))


def test_a_purchase_keeps_its_sessions_expiry(card: Card) -> None:
    purchase = card.bought(card.customer())
    expires_at = card.stripe.sessions[purchase["checkout_session_id"]]["expires_at"]
    assert card.purchase(purchase["id"]).checkout_expires_at == datetime.fromtimestamp(expires_at, UTC)


def test_stripes_expiry_webhook_takes_the_purchase_out_of_waiting_in_the_history(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    assert _history_status(card, customer, purchase["id"]) == "open"
    card.deliver_ok(card.stripe.event("checkout.session.expired", card.stripe.expire(purchase["checkout_session_id"])))
    assert _history_status(card, customer, purchase["id"]) == "expired"


def test_past_its_deadline_a_purchase_whose_session_expired_without_a_webhook_expires(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.stripe.expire(purchase["checkout_session_id"])  # the webhook never comes
    settings, deadline = _recent_only(card), _deadline(card, purchase)

    sync.sync(card.engine, card.gateway, settings, deadline - timedelta(minutes=1))
    assert card.purchase(purchase["id"]).status == "open"
    assert _looked_up(card, purchase) == 0  # not asked before its time

    result = sync.sync(card.engine, card.gateway, settings, deadline + timedelta(minutes=1))
    assert result.sessions_listed == 0
    assert result.purchases_updated == 1
    row = card.purchase(purchase["id"])
    assert (row.status, row.failure_code) == ("expired", "expired")
    assert _looked_up(card, purchase) == 1
    assert _history_status(card, customer, purchase["id"]) == "expired"
    # Settled: the next pass asks nothing.
    sync.sync(card.engine, card.gateway, settings, deadline + timedelta(hours=1))
    assert _looked_up(card, purchase) == 1


def test_a_session_paid_whose_webhook_was_lost_mints_at_the_deadline(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.stripe.pay(purchase["checkout_session_id"])
    sync.sync(card.engine, card.gateway, _recent_only(card), _deadline(card, purchase) + timedelta(minutes=1))
    assert card.purchase(purchase["id"]).status == "completed"
    assert card.available(customer.account_id) == 1_000


def test_a_session_stripe_still_calls_open_is_left_open(card: Card) -> None:
    purchase = card.bought(card.customer())
    sync.sync(card.engine, card.gateway, _recent_only(card), _deadline(card, purchase) + timedelta(minutes=1))
    assert card.purchase(purchase["id"]).status == "open"
    assert _looked_up(card, purchase) == 1


def test_a_session_stripe_no_longer_has_expires_its_purchase(card: Card) -> None:
    purchase = card.bought(card.customer())
    later = _deadline(card, purchase) + timedelta(minutes=1)
    del card.stripe.sessions[purchase["checkout_session_id"]]
    sync.sync(card.engine, card.gateway, _recent_only(card), later)
    assert card.purchase(purchase["id"]).status == "expired"


def test_stripe_down_at_the_deadline_leaves_the_purchase_for_the_next_pass(card: Card) -> None:
    purchase = card.bought(card.customer())
    card.stripe.expire(purchase["checkout_session_id"])
    later = _deadline(card, purchase) + timedelta(minutes=1)
    card.stripe.fail("GET", "/v1/checkout/sessions/", "500", times=2)
    sync.sync(card.engine, card.gateway, _recent_only(card), later)
    assert card.purchase(purchase["id"]).status == "open"
    sync.sync(card.engine, card.gateway, _recent_only(card), later)
    assert card.purchase(purchase["id"]).status == "expired"


def test_a_purchase_with_no_expiry_on_record_counts_a_days_lifetime_from_its_creation(card: Card) -> None:
    purchase = card.bought(card.customer())
    card.stripe.expire(purchase["checkout_session_id"])
    with card.engine.begin() as conn:  # recorded before purchases kept their session's expiry
        conn.execute(repo.purchases.update().values(checkout_expires_at=None))
    created = card.purchase(purchase["id"]).created_at
    grace = timedelta(seconds=card.settings.card_checkout_expiry_grace_seconds)
    deadline = created + sync.SESSION_LIFETIME + grace
    sync.sync(card.engine, card.gateway, _recent_only(card), deadline - timedelta(minutes=1))
    assert card.purchase(purchase["id"]).status == "open"
    sync.sync(card.engine, card.gateway, _recent_only(card), deadline + timedelta(minutes=1))
    assert card.purchase(purchase["id"]).status == "expired"
