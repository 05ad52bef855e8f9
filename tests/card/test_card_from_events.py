"""The card that paid, taken from the events Stripe sends beside a payment (``charge.succeeded`` names it) rather than
asked of Stripe for every purchase; asked for only when no event brought it (concurrently for a batch), and filled in
when a later event brings a card Stripe could not give at the mint."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from services.card import repository as inbox_repo
from services.card.flows import inbox
from services.card.repository import card_labels_of_purchases
from services.card.stripe_objects import EventData
from services.card.tasks import inbox_batch
from services.card.webhooks import parse_event, store_event
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.outbox import repository as outbox_repo
from services.outbox import service as outbox_service
from services.worker.jobs import JobSpec
from services.worker.runner import run_job_once
from tests.card.conftest import Card, Customer

CARD_READS = ("GET", "/v1/payment_intents/")


def _with_email(card: Card) -> Customer:
    customer = card.customer()
    response = card.client.patch(
        f"/v1/admin/accounts/{customer.account_id}", json={"email": "buyer@example.test"}, headers=card.admin
    )
    assert response.status_code == 200, response.text
    return customer


def _receipt_text(card: Card) -> str:
    """The one receipt, rendered as the worker renders it when it first sends it."""
    with unit_of_work(card.engine) as session:
        rows = list(session.execute(select(outbox_repo.messages)).all())
        [row] = outbox_service.render_receipts(
            session, rows, card.settings, cards_of_purchases=card_labels_of_purchases
        )
        return str(row.body_text)


def _charge(card: Card, session: dict[str, Any]) -> dict[str, Any]:
    """The charge that paid a session, carrying its PaymentIntent's metadata (the purchase's ids) as Stripe copies
    it onto the charge."""
    intent = card.stripe.intents[session["payment_intent"]]
    return card.stripe.charge_of(session["id"]) | {"metadata": dict(intent["metadata"])}


def _paid(card: Card, customer: Customer, key: str = "k1", **pay: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A purchase paid at Checkout: the purchase and its session as Stripe shows it."""
    purchase = card.bought(customer, key)
    return purchase, card.stripe.pay(purchase["checkout_session_id"], **pay)


def test_the_card_comes_from_charge_succeeded_and_fulfilment_asks_stripe_nothing(card: Card) -> None:
    customer = _with_email(card)
    purchase, session = _paid(card, customer, payment_method="pm_card_amex")
    charge = _charge(card, session)
    # As Stripe sends them: the charge, the PaymentIntent, then the session.
    noted = card.deliver_ok(card.stripe.event("charge.succeeded", charge))
    card.deliver_ok(card.stripe.event("payment_intent.succeeded", card.stripe.intents[session["payment_intent"]]))
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.inbox_event(noted["event_id"]).outcome == "card_noted"
    row = card.purchase(purchase["id"])
    assert (row.status, row.card_brand, row.card_last4) == ("completed", "amex", "8431")
    assert card.stripe.sent(*CARD_READS) == []
    assert "Card:             American Express ending 8431" in _receipt_text(card)


def test_without_an_event_naming_the_card_fulfilment_asks_stripe_once(card: Card) -> None:
    customer = _with_email(card)
    purchase, session = _paid(card, customer)
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    [read] = card.stripe.sent(*CARD_READS)
    assert read.path == f"/v1/payment_intents/{session['payment_intent']}"
    row = card.purchase(purchase["id"])
    assert (row.card_brand, row.card_last4) == ("visa", "4242")
    # The charge's event, arriving after, changes nothing.
    later = card.deliver_ok(card.stripe.event("charge.succeeded", _charge(card, session)))
    assert card.inbox_event(later["event_id"]).outcome == "card_known"
    assert "Card:             Visa ending 4242" in _receipt_text(card)


def test_a_charge_event_after_the_mint_fills_in_a_card_stripe_could_not_give(card: Card) -> None:
    customer = _with_email(card)
    purchase, session = _paid(card, customer)
    card.stripe.fail(*CARD_READS, "500", times=10)
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    row = card.purchase(purchase["id"])
    assert (row.status, row.card_brand) == ("completed", None)
    noted = card.deliver_ok(card.stripe.event("charge.succeeded", _charge(card, session)))
    assert card.inbox_event(noted["event_id"]).outcome == "card_noted"
    row = card.purchase(purchase["id"])
    assert (row.card_brand, row.card_last4, row.lot_id) == ("visa", "4242", card.card_lots(customer.account_id)[0].id)
    shown = card.client.get(f"/v1/card/purchases/{purchase['id']}", headers=customer.headers).json()
    assert shown["card_label"] == "Visa ending 4242"
    # The receipt, not sent yet, is rendered with it.
    assert "Card:             Visa ending 4242" in _receipt_text(card)
    assert card.available(customer.account_id) == 1_000


def test_a_charge_of_a_payment_not_ours_is_left_alone(card: Card) -> None:
    card.stripe.payment_without_purchase(1_000)
    [charge] = card.stripe.charges.values()
    before = card.snapshot()
    answer = card.deliver_ok(card.stripe.event("charge.succeeded", charge))
    assert card.inbox_event(answer["event_id"]).outcome == "not_ours"
    after = card.snapshot()
    assert {k: v for k, v in after.items() if k != "stripe_webhook_events"} == {
        k: v for k, v in before.items() if k != "stripe_webhook_events"
    }


def test_a_charge_naming_another_accounts_purchase_records_no_card(card: Card) -> None:
    customer, other = card.customer("one"), card.customer("two")
    purchase, session = _paid(card, customer)
    charge = _charge(card, session) | {"payment_intent": "pi_elsewhere"}
    charge["metadata"] = charge["metadata"] | {"creditrail_account_id": str(other.account_id)}
    answer = card.deliver_ok(card.stripe.event("charge.succeeded", charge))
    assert card.inbox_event(answer["event_id"]).outcome == "not_ours"
    assert card.purchase(purchase["id"]).card_brand is None


def _stored(card: Card, event: dict[str, Any]) -> tuple[int, EventData]:
    payload = json.dumps(event)
    parsed = parse_event(payload)
    with unit_of_work(card.engine) as session:
        receipt = store_event(session, parsed, payload, source="webhook", now=utcnow(), settings=card.settings)
    return receipt.inbox_id, parsed


def test_a_batch_asks_stripe_only_for_the_cards_no_event_brought_side_by_side(card: Card) -> None:
    customer = card.customer()
    paid = [_paid(card, customer, key) for key in ("a", "b", "c", "d")]
    # The first purchase's charge event came (and was processed) before the batch.
    card.deliver_ok(card.stripe.event("charge.succeeded", _charge(card, paid[0][1])))
    items = [_stored(card, card.stripe.event("checkout.session.completed", session)) for _, session in paid]
    with ThreadPoolExecutor(max_workers=4) as pool:
        inbox.process_batch(card.engine, items, card.gateway, card.settings, pool)
    asked = {read.path.rsplit("/", 1)[1] for read in card.stripe.sent(*CARD_READS)}
    assert asked == {session["payment_intent"] for _, session in paid[1:]}
    assert {card.inbox_event(event.id).outcome for _, event in items} == {"minted"}
    assert {(card.purchase(p["id"]).card_brand, card.purchase(p["id"]).card_last4) for p, _ in paid} == {
        ("visa", "4242")
    }
    assert card.available(customer.account_id) == 4_000


def test_with_inline_processing_off_the_worker_fulfils_a_backlog_in_batches_with_the_cards_events_brought(
    card_deferred: Card,
) -> None:
    card = card_deferred
    customer = card.customer()
    paid = [_paid(card, customer, key) for key in ("a", "b", "c")]
    for _, session in paid:
        # Without the PaymentIntent's metadata: the batch matches the charge to the session by its PaymentIntent.
        card.deliver_ok(card.stripe.event("charge.succeeded", card.stripe.charge_of(session["id"])))
        card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    # One event Stripe's body cannot be read from, stored as any other is, fails alone.
    broken = _stored(card, card.stripe.event("checkout.session.completed", paid[0][1]))
    with unit_of_work(card.engine) as db:
        db.execute(inbox_repo.inbox.update().where(inbox_repo.inbox.c.id == broken[0]).values(payload="not json"))
    spec = JobSpec(
        name="card.inbox", batch=None, step=inbox_batch(card.settings, card.gateway), interval_seconds=1, batch_size=50
    )
    run = run_job_once(card.engine, spec)
    assert (str(run.outcome), run.items) == ("success", 7)
    assert card.stripe.sent(*CARD_READS) == []
    assert card.available(customer.account_id) == 3_000
    assert {(card.purchase(p["id"]).card_brand, card.purchase(p["id"]).status) for p, _ in paid} == {
        ("visa", "completed")
    }
    with unit_of_work(card.engine) as db:
        failed = inbox_repo.get_event(db, broken[0])
    assert failed is not None
    assert (failed.status, failed.attempts) == ("failed", 1)
