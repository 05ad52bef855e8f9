"""Concurrency on PostgreSQL: the same event delivered ten times at once mints once; so do the webhook, a second
event and the success page racing for one session."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from services.card.flows import inbox
from services.card.flows.intake import InboxWriter
from services.card.fulfilment import fulfil_checkout_session
from services.card.stripe_objects import CheckoutSessionData
from services.card.webhooks import Receipt, parse_event, store_event, verify_signature
from services.core.clock import utcnow
from services.core.db import unit_of_work
from tests.card.conftest import WEBHOOK_SECRET, Card, make_card
from tests.card.stripe_fake import sign


@pytest.fixture
def pg_card(pg_engine: Engine) -> Iterator[Card]:
    yield from make_card(pg_engine, card_process_webhooks_inline=False)


@pytest.fixture
def pg_card_inline(pg_engine: Engine) -> Iterator[Card]:
    yield from make_card(pg_engine)


def _together(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run the tasks in threads that start at the same instant; re-raise the first error."""
    barrier = threading.Barrier(len(tasks))
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = tasks[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _receive_and_process(card: Card, payload: str, header: str) -> str | None:
    """What the webhook endpoint and its background processing do, in one thread."""
    verified = verify_signature(payload.encode(), header, card.settings, time.time())
    event = parse_event(verified)
    with unit_of_work(card.engine) as session:
        receipt = store_event(session, event, verified, source="webhook", now=utcnow(), settings=card.settings)
    return inbox.process_event(card.engine, receipt.inbox_id, card.gateway, card.settings)


def test_the_same_event_delivered_ten_times_at_once_mints_once(pg_card: Card) -> None:
    card = pg_card
    customer = card.customer()
    purchase = card.bought(customer)
    event = card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    payload = json.dumps(event)
    header = sign(payload, WEBHOOK_SECRET)
    outcomes = _together([lambda: _receive_and_process(card, payload, header) for _ in range(10)])
    assert outcomes.count("minted") == 1
    assert set(outcomes) <= {"minted", None}
    assert card.count("stripe_webhook_events") == 1
    assert card.available(customer.account_id) == 1_000
    assert len(card.card_lots(customer.account_id)) == 1


def test_ten_concurrent_deliveries_over_http_mint_once(pg_card_inline: Card) -> None:
    card = pg_card_inline
    customer = card.customer()
    purchase = card.bought(customer)
    event = card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))
    responses = _together([lambda: card.deliver(event) for _ in range(10)])
    assert [r.status_code for r in responses] == [200] * 10
    assert sorted(r.json()["duplicate"] for r in responses) == [False] + [True] * 9
    assert card.inbox_event(event["id"]).outcome == "minted"
    assert card.available(customer.account_id) == 1_000


def test_the_webhook_another_event_and_the_success_page_racing_mint_once(pg_card: Card) -> None:
    card = pg_card
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    payloads = [json.dumps(card.stripe.event("checkout.session.completed", session)) for _ in range(4)]
    payloads += [json.dumps(card.stripe.event("checkout.session.async_payment_succeeded", session)) for _ in range(3)]

    def success_page() -> str:
        data = card.gateway.retrieve_checkout_session(session["id"])
        with unit_of_work(card.engine) as db:
            return fulfil_checkout_session(db, data, now=utcnow()).code

    tasks: list[Callable[[], Any]] = [
        partial(_receive_and_process, card, payload, sign(payload, WEBHOOK_SECRET)) for payload in payloads
    ]
    tasks += [success_page for _ in range(3)]
    outcomes = _together(tasks)
    assert outcomes.count("minted") == 1
    assert card.available(customer.account_id) == 1_000
    assert len(card.card_lots(customer.account_id)) == 1


def test_concurrent_refund_events_claw_back_once(pg_card: Card) -> None:
    card = pg_card
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    _receive_and_process(card, *_signed(card.stripe.event("checkout.session.completed", session)))
    charge = card.stripe.refund(card.stripe.charge_of(session["id"])["id"], 1_000)
    events = [card.stripe.event("charge.refunded", charge) for _ in range(6)]
    _together([partial(_receive_and_process, card, *_signed(event)) for event in events])
    assert card.available(customer.account_id) == 0
    assert card.count("card_clawbacks") == 1
    assert CheckoutSessionData.parse(session).purchase_id == purchase["id"]


def _signed(event: dict[str, Any]) -> tuple[str, str]:
    payload = json.dumps(event)
    return payload, sign(payload, WEBHOOK_SECRET)


def test_two_inbox_writers_storing_the_same_events_at_once_store_each_once(pg_card: Card) -> None:
    """Two API processes' writers, each with a batch holding the same events: every event stored once, and each is
    new to exactly one of them."""
    card = pg_card
    events = []
    for index in range(5):
        purchase = card.bought(card.customer(f"w{index}"))
        paid = card.stripe.pay(purchase["checkout_session_id"])
        payload = json.dumps(card.stripe.event("checkout.session.completed", paid))
        events.append((parse_event(payload), payload))
    writers = [InboxWriter(card.engine, card.settings) for _ in range(2)]

    def store_all(writer: InboxWriter) -> list[Receipt]:
        futures = [writer.submit(event, payload) for event, payload in events]
        return [future.result(timeout=30) for future in futures if future is not None]

    try:
        results = _together([partial(store_all, writer) for writer in writers])
    finally:
        for writer in writers:
            writer.close()
    assert card.count("stripe_webhook_events") == 5
    for position, (event, _payload) in enumerate(events):
        receipts = [receipts[position] for receipts in results]
        assert sorted(r.duplicate for r in receipts) == [False, True]
        assert {r.inbox_id for r in receipts} == {card.inbox_event(event.id).id}
