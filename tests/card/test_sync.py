"""The sync job: what a lost webhook missed is read back from Stripe and fulfilled."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.card import repository as repo
from services.card import stripe_client
from services.card.flows import sync
from services.card.tasks import sync_batch
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.worker.jobs import JobSpec
from services.worker.runner import run_job_once
from tests.card.conftest import Card


def test_a_lost_webhook_is_found_in_stripes_event_list_and_mints(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    # Stripe records the event, but it never reaches us.
    event = card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    result = sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert result.events_stored == 1
    assert card.available(customer.account_id) == 1_000
    stored = card.inbox_event(event["id"])
    assert stored.source == "sync"
    assert stored.outcome == "minted"
    [listed] = card.stripe.sent("GET", "/v1/events")
    assert set(listed.params["types"]) >= {"checkout.session.completed", "charge.refunded"}
    # The webhook arriving late, and the next sync, change nothing.
    assert card.deliver_ok(event)["duplicate"] is True
    again = sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert again.events_stored == 0
    assert card.available(customer.account_id) == 1_000


def test_the_event_cursor_moves_forward_once_the_list_is_read_to_its_end(card: Card) -> None:
    card.bought(card.customer())
    card.stripe.event("checkout.session.expired", {"id": "cs_old", "object": "checkout.session"}, created=1_000)
    created = int(utcnow().timestamp()) - 10
    newest = card.stripe.event(
        "checkout.session.expired", {"id": "cs_gone", "object": "checkout.session"}, created=created
    )
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    with unit_of_work(card.engine) as session:
        assert repo.get_cursor(session, sync.EVENTS_CURSOR) == newest["created"]
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    [_, second] = card.stripe.sent("GET", "/v1/events")
    assert int(second.params["created[gte]"]) == newest["created"] - sync.OVERLAP_SECONDS


def test_a_paid_session_with_no_event_at_all_is_fulfilled_from_the_session_list(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer, pack="pro")
    card.stripe.pay(purchase["checkout_session_id"])
    result = sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert result.events_stored == 0
    assert result.purchases_updated == 1
    assert card.purchase(purchase["id"]).status == "completed"
    assert card.available(customer.account_id) == 2_500


def test_an_expired_session_expires_its_purchase(card: Card) -> None:
    purchase = card.bought(card.customer())
    card.stripe.expire(purchase["checkout_session_id"])
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert card.purchase(purchase["id"]).status == "expired"


def test_a_session_whose_creation_answer_was_lost_is_attached(card: Card) -> None:
    customer = card.customer()
    card.stripe.fail("POST", "/v1/checkout/sessions", "timeout_after", times=2)
    purchase_id = card.buy(customer).json()["error"]["details"]["purchase_id"]
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    row = card.purchase(purchase_id)
    [session_id] = card.stripe.sessions
    assert row.status == "open"
    assert row.checkout_session_id == session_id
    assert row.checkout_url


def test_sessions_outside_the_lookback_window_are_not_listed(card: Card) -> None:
    purchase = card.bought(card.customer())
    card.stripe.pay(purchase["checkout_session_id"])
    later = utcnow() + timedelta(seconds=card.settings.card_sync_lookback_seconds + 60)
    result = sync.sync(card.engine, card.gateway, card.settings, later)
    assert result.sessions_listed == 0
    # Long past its session's deadline, the purchase is looked up on Stripe by itself instead (and found paid).
    assert len(card.stripe.sent("GET", f"/v1/checkout/sessions/{purchase['checkout_session_id']}")) == 1
    assert card.purchase(purchase["id"]).status == "completed"


def test_the_sync_job_runs_in_the_worker(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    spec = JobSpec(
        name="card.sync", batch=None, step=sync_batch(card.settings, card.gateway), interval_seconds=300, batch_size=100
    )
    run = run_job_once(card.engine, spec)
    assert str(run.outcome) == "success"
    assert run.items >= 1
    assert card.available(customer.account_id) == 1_000


def test_stripe_down_during_a_sync_fails_the_run_and_changes_nothing(card: Card) -> None:
    purchase = card.bought(card.customer())
    card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    card.stripe.fail("GET", "/v1/events", "500", times=2)
    before = card.snapshot()
    spec = JobSpec(
        name="card.sync", batch=None, step=sync_batch(card.settings, card.gateway), interval_seconds=300, batch_size=100
    )
    run = run_job_once(card.engine, spec)
    assert str(run.outcome) == "error"
    assert "StripeUnavailable" in (run.error or "")
    after = card.snapshot()
    after.pop("job_health"), before.pop("job_health")
    assert after == before


def test_a_purchase_never_started_expires_after_stripes_idempotency_window(card: Card) -> None:
    customer = card.customer()
    card.stripe.fail("POST", "/v1/checkout/sessions", "500", times=2)
    purchase_id = card.buy(customer).json()["error"]["details"]["purchase_id"]
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert card.purchase(purchase_id).status == "pending"
    sync.sync(card.engine, card.gateway, card.settings, utcnow() + sync.UNSTARTED_EXPIRY + timedelta(minutes=1))
    row = card.purchase(purchase_id)
    assert row.status == "expired"
    assert row.failure_code == "not_started"


def test_events_are_read_page_by_page(card: Card, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe_client, "LIST_PAGE_SIZE", 2)
    customer = card.customer()
    for key in ("a", "b", "c"):
        purchase = card.bought(customer, key, pack="starter")
        card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    result = sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert result.events_stored == 3
    assert len(card.stripe.sent("GET", "/v1/events")) == 2
    assert card.available(customer.account_id) == 1_500
