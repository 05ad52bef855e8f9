"""The inbox writer: verified events stored in batches before they are acknowledged, each once by its id; a batch
that fails is stored event by event, so only a bad event's own request fails; a full (or stopped) writer leaves
the request to store its event itself."""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import pytest

from services.card.flows import intake
from services.card.flows.intake import InboxWriter
from services.card.stripe_objects import EventData
from services.card.webhooks import Receipt, parse_event, store_event
from services.core.clock import utcnow
from services.core.db import unit_of_work
from tests.card.conftest import Card


def _event(card: Card, event_type: str = "checkout.session.completed") -> tuple[EventData, str]:
    purchase = card.bought(card.customer(f"c{utcnow().timestamp()}"))
    session = card.stripe.pay(purchase["checkout_session_id"])
    payload = json.dumps(card.stripe.event(event_type, session))
    return parse_event(payload), payload


def _store(writer: InboxWriter, items: list[tuple[EventData, str]]) -> list[Future[Receipt]]:
    futures: list[Future[Receipt]] = [Future() for _ in items]
    writer.store([(event, payload, future) for (event, payload), future in zip(items, futures, strict=True)])
    return futures


@pytest.fixture
def writer(card: Card) -> Any:
    stopped = InboxWriter(card.engine, card.settings)
    stopped.close()  # store() is called directly below: no thread races the test
    return stopped


def test_a_batch_stores_each_event_once_and_says_which_were_new(card: Card, writer: InboxWriter) -> None:
    first, first_payload = _event(card)
    known, known_payload = _event(card)
    with unit_of_work(card.engine) as session:
        earlier = store_event(session, known, known_payload, source="webhook", now=utcnow(), settings=card.settings)

    receipts = [f.result() for f in _store(writer, [(first, first_payload), (first, first_payload), (known, "{}")])]

    assert [(r.event_id, r.duplicate) for r in receipts] == [(first.id, False), (first.id, True), (known.id, True)]
    assert receipts[0].inbox_id == receipts[1].inbox_id
    assert receipts[0].status == receipts[1].status == "pending"
    assert receipts[2].inbox_id == earlier.inbox_id
    assert card.count("stripe_webhook_events") == 2
    assert card.inbox_event(known.id).payload == known_payload  # the first stored stays


def test_an_event_type_the_rail_ignores_is_stored_as_ignored_in_a_batch(card: Card, writer: InboxWriter) -> None:
    event, payload = _event(card, "customer.created")
    (receipt,) = [f.result() for f in _store(writer, [(event, payload)])]
    assert (receipt.status, receipt.duplicate) == ("ignored", False)
    assert card.inbox_event(event.id).outcome == "unhandled_event_type"


def test_a_failed_batch_is_stored_event_by_event_and_fails_only_the_bad_one(
    card: Card, writer: InboxWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, good_payload = _event(card)
    bad, bad_payload = _event(card)

    def batch_fails(*_args: Any, **_kwargs: Any) -> list[Receipt]:
        raise RuntimeError("the batch failed")

    def one_fails(session: Any, event: EventData, payload: str, **kwargs: Any) -> Receipt:
        if event.id == bad.id:
            raise RuntimeError("this event cannot be stored")
        return store_event(session, event, payload, **kwargs)

    monkeypatch.setattr(intake, "store_events", batch_fails)
    monkeypatch.setattr(intake, "store_event", one_fails)
    stored, failed = _store(writer, [(good, good_payload), (bad, bad_payload)])

    assert stored.result().duplicate is False
    with pytest.raises(RuntimeError, match="cannot be stored"):
        failed.result()
    assert card.inbox_event(good.id) is not None
    assert card.inbox_event(bad.id) is None


def test_the_writer_thread_stores_what_is_submitted_and_stops_when_closed(card: Card) -> None:
    running = InboxWriter(card.engine, card.settings)
    items = [_event(card) for _ in range(5)]
    futures = [running.submit(event, payload) for event, payload in items]
    receipts = [f.result(timeout=30) for f in futures if f is not None]
    running.close()
    assert len(receipts) == 5
    assert all(not r.duplicate for r in receipts)
    assert running.submit(*items[0]) is None  # stopped: the caller stores it


def test_the_webhook_stores_the_event_itself_when_the_writer_cannot_take_it(card: Card) -> None:
    stopped = InboxWriter(card.engine, card.settings)
    stopped.close()
    card.client.app.state.card_inbox_writer = stopped  # type: ignore[attr-defined]
    purchase = card.bought(card.customer())
    session = card.stripe.pay(purchase["checkout_session_id"])
    event = card.stripe.event("checkout.session.completed", session)

    ack = card.deliver_ok(event)

    assert (ack["status"], ack["duplicate"]) == ("pending", False)
    assert card.purchase(purchase["id"]).status == "completed"
    assert card.deliver_ok(event)["duplicate"] is True
