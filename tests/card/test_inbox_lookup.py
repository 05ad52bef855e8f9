"""Operators look inbox events up: one by its Stripe event id (status, attempts, the last error, when it was
received and processed, the purchase it touched), and lists by status in the API's one list envelope. An event whose
object cannot be read fails at once, for good, with its reason."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from services.card import repository as repo
from services.card.flows import inbox
from services.card.webhooks import parse_event, store_event
from services.core.clock import utcnow
from services.core.db import unit_of_work
from tests.card.conftest import Card

# Signed events that Stripe would never send as they are, each unreadable in its own way.
UNREADABLE: list[tuple[str, dict[str, Any], str]] = [
    ("checkout.session.completed", {"object": "checkout.session", "status": "complete"}, "without an id"),
    ("charge.refunded", {"id": "cs_1", "object": "checkout.session"}, "where a charge was expected"),
    ("charge.dispute.created", {"id": "dp_1", "object": "dispute", "amount": 500}, "without an id or a charge"),
]


def _unreadable_events(card: Card) -> list[dict[str, Any]]:
    events = []
    for event_type, obj, _reason in UNREADABLE:
        event = card.stripe.event(event_type, obj)
        assert card.deliver(event).status_code == 200  # acknowledged: Stripe stops sending it
        events.append(event)
    return events


def test_an_event_whose_object_cannot_be_read_fails_at_once_for_good_with_its_reason(card: Card) -> None:
    events = _unreadable_events(card)

    for event, (_type, _obj, reason) in zip(events, UNREADABLE, strict=True):
        stored = card.inbox_event(event["id"])
        assert (stored.status, stored.attempts, stored.next_attempt_at) == ("failed", 1, None)
        assert stored.outcome == "unreadable_object"
        assert stored.last_error.startswith(f"unreadable_object: {event['type']}: ")
        assert reason in stored.last_error
    # Not retried, however long the inbox job waits.
    assert inbox.drain(card.engine, card.gateway, card.settings, utcnow() + timedelta(days=3), 10) == 0
    assert {card.inbox_event(event["id"]).attempts for event in events} == {1}
    # Finance hears of each once.
    assert sorted(e.reference for e in card.exceptions("webhook_unreadable")) == sorted(e["id"] for e in events)
    # An admin's retry sends it round again, and it fails the same way.
    retried = card.client.post(f"/v1/admin/card/webhook-events/{events[0]['id']}/retry", headers=card.admin)
    assert retried.json()["outcome"] == "unreadable_object"
    assert card.inbox_event(events[0]["id"]).attempts == 2
    assert len(card.exceptions("webhook_unreadable")) == 3


def test_failed_events_are_listed_with_their_reason_page_by_page(card: Card) -> None:
    purchase = card.bought(card.customer())
    card.complete(purchase)  # one processed event, not listed as failed
    events = _unreadable_events(card)
    finance = card.key("finance")

    first = card.client.get("/v1/admin/card/webhook-events", params={"status": "failed", "limit": 2}, headers=finance)
    assert first.status_code == 200, first.text
    page = first.json()
    assert {"data", "has_more", "next_cursor", "counts"} == set(page)
    assert page["has_more"] is True
    assert [item["event_id"] for item in page["data"]] == [events[0]["id"], events[1]["id"]]
    assert all(item["last_error"].startswith("unreadable_object") for item in page["data"])
    assert page["data"][0]["status"] == "failed"
    assert page["data"][0]["next_attempt_at"] is None

    second = card.client.get(
        "/v1/admin/card/webhook-events",
        params={"status": "failed", "limit": 2, "cursor": page["next_cursor"]},
        headers=finance,
    ).json()
    assert [item["event_id"] for item in second["data"]] == [events[2]["id"]]
    assert (second["has_more"], second["next_cursor"]) == (False, None)

    everything = card.client.get("/v1/admin/card/webhook-events", headers=finance).json()
    assert len(everything["data"]) == 4
    assert everything["has_more"] is False


def test_the_event_list_refuses_an_unknown_status_or_cursor(card: Card) -> None:
    for params in ({"status": "exploded"}, {"cursor": "abc"}, {"cursor": "-1"}, {"limit": 0}):
        response = card.client.get("/v1/admin/card/webhook-events", params=params, headers=card.admin)
        assert response.status_code == 422, (params, response.text)
        expected = "invalid_cursor" if "cursor" in params else "invalid_request"
        assert response.json()["error"]["code"] == expected


def test_an_event_is_looked_up_by_its_stripe_id_with_the_purchase_it_touched(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.complete(purchase)
    [completed] = [e for e in card.stripe.events if e["data"]["object"]["id"] == session["id"]]

    response = card.client.get(f"/v1/admin/card/webhook-events/{completed['id']}", headers=card.key("finance"))

    assert response.status_code == 200, response.text
    found = response.json()
    assert found["event_id"] == completed["id"]
    assert found["event_type"] == "checkout.session.completed"
    assert (found["status"], found["attempts"], found["last_error"]) == ("processed", 0, None)
    assert found["outcome"] == "minted"
    assert found["object_id"] == session["id"]
    assert found["received_at"] is not None
    assert found["processed_at"] is not None
    assert found["purchase_id"] == purchase["id"]
    assert found["purchase"] == {
        "id": purchase["id"],
        "account_id": customer.account_id,
        "kind": "checkout",
        "status": "completed",
    }


def test_events_processed_in_a_batch_name_the_purchase_they_touched(card: Card) -> None:
    customer = card.customer()
    items = []
    purchases = [card.bought(customer, key, pack="starter") for key in ("a", "b")]
    for purchase in purchases:
        event = card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
        payload = json.dumps(event)
        with unit_of_work(card.engine) as session:
            receipt = store_event(
                session, parse_event(payload), payload, source="webhook", now=utcnow(), settings=card.settings
            )
        items.append((receipt.inbox_id, parse_event(payload)))

    inbox.process_batch(card.engine, items, card.gateway, card.settings)

    assert [card.inbox_event(event.id).purchase_id for _, event in items] == [p["id"] for p in purchases]


def test_an_unknown_event_id_is_a_404_and_the_lookup_needs_the_finance_role(card: Card) -> None:
    missing = card.client.get("/v1/admin/card/webhook-events/evt_nope", headers=card.admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "webhook_event_not_found"
    assert card.client.get("/v1/admin/card/webhook-events/evt_nope", headers=card.customer().headers).status_code == 403
    assert card.client.get("/v1/admin/card/webhook-events/evt_nope").status_code == 401
    assert card.client.get("/v1/admin/card/webhook-events", headers=card.customer("b").headers).status_code == 403


def test_an_unreadable_event_is_failed_as_it_is_stored_even_with_no_processing_in_the_api(
    card_deferred: Card,
) -> None:
    card = card_deferred
    event = card.stripe.event("checkout.session.completed", {"object": "checkout.session"})
    ack = card.deliver_ok(event)
    assert (ack["received"], ack["status"]) == (True, "failed")
    stored = card.inbox_event(event["id"])
    assert (stored.status, stored.attempts, stored.next_attempt_at, stored.outcome) == (
        "failed",
        1,
        None,
        "unreadable_object",
    )
    assert "without an id" in stored.last_error
    [exception] = card.exceptions("webhook_unreadable")
    assert exception.reference == event["id"]
    assert inbox.drain(card.engine, card.gateway, card.settings, utcnow() + timedelta(days=1), 10) == 0
    # Delivered again, it is a duplicate: stored and reported once.
    assert card.deliver_ok(event)["duplicate"] is True
    assert len(card.exceptions("webhook_unreadable")) == 1


def test_an_unreadable_event_stored_as_pending_fails_at_once_when_processed(card_deferred: Card) -> None:
    card = card_deferred
    event = card.stripe.event("charge.refunded", {"id": "cs_1", "object": "checkout.session"})
    now = utcnow()
    with unit_of_work(card.engine) as session:  # as an earlier version stored it: pending
        inbox_id = repo.insert_event(
            session,
            {
                "event_id": event["id"],
                "event_type": event["type"],
                "livemode": False,
                "object_id": "cs_1",
                "stripe_created_at": now,
                "source": "webhook",
                "payload": json.dumps(event),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "received_at": now,
            },
        )
    assert inbox_id is not None
    assert inbox.drain(card.engine, card.gateway, card.settings, now, 10) == 1
    stored = card.inbox_event(event["id"])
    assert (stored.status, stored.attempts, stored.next_attempt_at) == ("failed", 1, None)
    assert "where a charge was expected" in stored.last_error
    assert [e.reference for e in card.exceptions("webhook_unreadable")] == [event["id"]]
    assert inbox.drain(card.engine, card.gateway, card.settings, now + timedelta(days=1), 10) == 0
