"""The inbox: processing off the request path, failures retried with backoff and visible, dead events, an admin's
retry, and the worker's inbox job taking what the API did not process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from services.card.flows import inbox
from services.card.stripe_objects import EventData
from services.card.tasks import inbox_batch
from services.card.webhooks import parse_event, store_event
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.worker.jobs import JobSpec
from services.worker.runner import run_job_once
from tests.card.conftest import Card, make_card


@pytest.fixture
def card_two_attempts(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine, card_inbox_max_attempts=2)


def _thin_completed_event(card: Card) -> tuple[dict[str, Any], dict[str, Any]]:
    """A paid purchase whose event lacks the session's state, so processing must ask Stripe."""
    purchase = card.bought(card.customer())
    session = card.stripe.pay(purchase["checkout_session_id"])
    return purchase, card.stripe.event(
        "checkout.session.completed", {"id": session["id"], "object": "checkout.session"}
    )


def test_a_failed_processing_is_retried_after_a_backoff_and_is_visible(card: Card) -> None:
    purchase, event = _thin_completed_event(card)
    card.stripe.fail("GET", "/v1/checkout/sessions/", "500", times=2)
    assert card.deliver(event).status_code == 200  # acknowledged all the same
    stored = card.inbox_event(str(event["id"]))
    assert stored.status == "failed"
    assert stored.attempts == 1
    assert "stripe_unavailable" in stored.last_error or "Stripe is unavailable" in stored.last_error
    # The initial backoff (30 s), counted from the failure, which came shortly after the event was stored.
    delay = (stored.next_attempt_at - stored.received_at).total_seconds()
    assert 30 <= delay < 60

    listed = card.client.get("/v1/admin/card/webhook-events", params={"status": "failed"}, headers=card.key("finance"))
    assert listed.status_code == 200
    assert [e["event_id"] for e in listed.json()["data"]] == [event["id"]]
    assert listed.json()["counts"] == {"failed": 1}

    # Not due yet: the drain leaves it; once due, it is processed.
    assert inbox.drain(card.engine, card.gateway, card.settings, utcnow(), 10) == 0
    later = utcnow() + timedelta(seconds=31)
    assert inbox.drain(card.engine, card.gateway, card.settings, later, 10) == 1
    stored = card.inbox_event(str(event["id"]))
    assert stored.status == "processed"
    assert stored.outcome == "minted"
    assert stored.last_error is None
    assert card.purchase(int(purchase["id"])).status == "completed"


def test_the_backoff_doubles_up_to_its_maximum(card: Card) -> None:
    settings = card.settings.model_copy(update={"card_inbox_backoff_max_seconds": 100.0})
    assert [inbox.backoff(n, settings).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


def test_an_event_failing_too_often_is_dead_a_finance_exception_and_an_admin_can_retry_it(
    card_two_attempts: Card,
) -> None:
    card = card_two_attempts
    purchase, event = _thin_completed_event(card)
    card.stripe.fail("GET", "/v1/checkout/sessions/", "500", times=4)
    card.deliver_ok(event)
    inbox.drain(card.engine, card.gateway, card.settings, utcnow() + timedelta(hours=1), 10)
    stored = card.inbox_event(str(event["id"]))
    assert stored.status == "dead"
    assert stored.attempts == 2
    assert stored.next_attempt_at is None
    [exception] = card.exceptions("webhook_processing_failed")
    assert exception.reference == f"card:{event['id']}"
    assert exception.details["attempts"] == 2
    # Dead events are not retried by the worker.
    assert inbox.drain(card.engine, card.gateway, card.settings, utcnow() + timedelta(days=1), 10) == 0

    customer = card.client.post(
        f"/v1/admin/card/webhook-events/{event['id']}/retry", headers=card.customer("x").headers
    )
    assert customer.status_code == 403
    retried = card.client.post(f"/v1/admin/card/webhook-events/{event['id']}/retry", headers=card.admin)
    assert retried.status_code == 200
    assert retried.json()["outcome"] == "minted"
    assert card.purchase(int(purchase["id"])).status == "completed"
    missing = card.client.post("/v1/admin/card/webhook-events/evt_nope/retry", headers=card.admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "webhook_event_not_found"


def test_with_inline_processing_off_the_worker_job_processes_the_inbox(card_deferred: Card) -> None:
    card = card_deferred
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    event = card.stripe.event("checkout.session.completed", session)
    assert card.deliver_ok(event)["status"] == "pending"
    assert card.inbox_event(str(event["id"])).status == "pending"
    assert card.available(customer.account_id) == 0

    spec = JobSpec(
        name="card.inbox", batch=None, step=inbox_batch(card.settings, card.gateway), interval_seconds=15, batch_size=10
    )
    run = run_job_once(card.engine, spec)
    assert run.items == 1
    assert str(run.outcome) == "success"
    assert card.inbox_event(str(event["id"])).outcome == "minted"
    assert card.available(customer.account_id) == 1_000


def test_the_worker_leaves_a_new_event_to_the_api_for_the_grace_period(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    event = card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    now = utcnow()
    with unit_of_work(card.engine) as session:
        # What the webhook stored when the API process died before processing it.
        receipt = store_event(
            session,
            parse_event(json.dumps(event)),
            json.dumps(event),
            source="webhook",
            now=now,
            settings=card.settings,
        )
    assert inbox.drain(card.engine, card.gateway, card.settings, now + timedelta(seconds=5), 10) == 0
    grace = timedelta(seconds=card.settings.card_inbox_grace_seconds)
    assert inbox.drain(card.engine, card.gateway, card.settings, now + grace, 10) == 1
    assert card.inbox_event(receipt.event_id).outcome == "minted"


def test_processing_an_event_twice_does_nothing_the_second_time(card_deferred: Card) -> None:
    card = card_deferred
    customer = card.customer()
    purchase = card.bought(customer)
    event = card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    card.deliver_ok(event)
    inbox_id = card.inbox_event(str(event["id"])).id
    assert inbox.process_event(card.engine, inbox_id, card.gateway, card.settings) == "minted"
    assert inbox.process_event(card.engine, inbox_id, card.gateway, card.settings) is None
    assert card.available(customer.account_id) == 1_000


def test_the_inbox_listing_needs_the_finance_role(card: Card) -> None:
    response = card.client.get("/v1/admin/card/webhook-events", headers=card.customer().headers)
    assert response.status_code == 403


def _stored(card: Card, event: dict[str, Any]) -> tuple[int, EventData]:
    payload = json.dumps(event)
    parsed = parse_event(payload)
    with unit_of_work(card.engine) as session:
        receipt = store_event(session, parsed, payload, source="webhook", now=utcnow(), settings=card.settings)
    return receipt.inbox_id, parsed


def test_a_batch_of_events_is_processed_in_one_go(card: Card) -> None:
    customer = card.customer()
    items = []
    for key in ("a", "b", "c"):
        purchase = card.bought(customer, key, pack="starter")
        items.append(
            _stored(
                card, card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
            )
        )
    items.append(items[0])  # the same event twice in one batch
    inbox.process_batch(card.engine, items, card.gateway, card.settings)
    assert card.available(customer.account_id) == 1_500
    assert {card.inbox_event(event.id).outcome for _, event in items} == {"minted"}


def test_a_failing_event_in_a_batch_fails_alone(card: Card) -> None:
    customer = card.customer()
    good = card.bought(customer, "a")
    bad, bad_event = _thin_completed_event(card)
    items = [
        _stored(card, card.stripe.event("checkout.session.completed", card.stripe.pay(good["checkout_session_id"]))),
        _stored(card, bad_event),
    ]
    card.stripe.fail("GET", "/v1/checkout/sessions/", "500", times=4)
    inbox.process_batch(card.engine, items, card.gateway, card.settings)
    assert card.purchase(good["id"]).status == "completed"
    failed = card.inbox_event(bad_event["id"])
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert card.purchase(bad["id"]).status == "open"
