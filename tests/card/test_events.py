"""The card rail's events for the platform: ``purchase.completed`` in the mint's transaction (once, however the
purchase is fulfilled), and ``refund.clawed_back`` with each refund or dispute that takes credits back (once per
clawback), each with a pending delivery for an endpoint that wants it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.card.flows import sync
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.events import repository as events_repo
from services.events.service import create_endpoint
from tests.card.conftest import Card


def _events(card: Card) -> list[Any]:
    with unit_of_work(card.engine) as session:
        table = events_repo.events
        return list(session.execute(select(table).order_by(table.c.id)).all())


def _deliveries(card: Card) -> list[Any]:
    with unit_of_work(card.engine) as session:
        table = events_repo.deliveries
        return list(session.execute(select(table).order_by(table.c.id)).all())


def _endpoint(card: Card) -> int:
    with unit_of_work(card.engine) as session:
        row, _secret = create_endpoint(
            session,
            card.settings,
            url="https://platform.example/hooks",
            event_types=["*"],
            description=None,
            now=utcnow(),
        )
    return int(row.id)


def test_one_purchase_completed_event_when_the_webhook_comes_twice_and_the_sync_job_mints_too(card: Card) -> None:
    endpoint_id = _endpoint(card)
    customer = card.customer()
    purchase = card.bought(customer, pack="pro")
    session = card.stripe.pay(purchase["checkout_session_id"])
    event = card.stripe.event("checkout.session.completed", session)
    sync.sync(card.engine, card.gateway, card.settings, utcnow())  # the sync job finds the paid session first
    card.deliver_ok(event)
    card.deliver_ok(event)
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    row = card.purchase(purchase["id"])
    [lot] = card.card_lots(customer.account_id)
    [recorded] = _events(card)
    assert (recorded.type, recorded.account_id, recorded.dedupe_key) == (
        "purchase.completed",
        customer.account_id,
        f"purchase.completed:lot:{lot.id}",
    )
    assert recorded.data == {
        "purchase_id": purchase["id"],
        "kind": row.kind,
        "pack": "pro",
        "rail": "card",
        "lot_id": lot.id,
        "amount_credits": 2_500,
        "amount_usd_cents": 2_500,
        "receipt_number": f"CR-{lot.credited_at.year}-{lot.id:08d}",
    }
    [delivery] = _deliveries(card)
    assert (delivery.event_id, delivery.endpoint_id, delivery.status) == (recorded.id, endpoint_id, "pending")


def test_a_refund_records_one_refund_clawed_back_event_per_clawback(card: Card) -> None:
    _endpoint(card)
    customer = card.customer()
    purchase = card.bought(customer)
    card.complete(purchase)
    charge = card.stripe.refund(card.stripe.charge_of(purchase["checkout_session_id"])["id"], 400)
    refunded = card.stripe.event("charge.refunded", charge)
    card.deliver_ok(refunded)
    card.deliver_ok(refunded)
    completed, clawed = _events(card)
    assert (completed.type, clawed.type, clawed.account_id) == (
        "purchase.completed",
        "refund.clawed_back",
        customer.account_id,
    )
    data = clawed.data
    assert (data["purchase_id"], data["lot_id"], data["kind"]) == (purchase["id"], completed.data["lot_id"], "refund")
    assert (data["amount_credits"], data["amount_usd_cents"]) == (400, 400)
    assert clawed.dedupe_key == f"refund.clawed_back:txn:{data['transaction_id']}"
    assert len(_deliveries(card)) == 2


def test_a_lost_dispute_records_its_clawback_once(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.complete(purchase)
    dispute = card.stripe.dispute(card.stripe.charge_of(purchase["checkout_session_id"])["id"])
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    card.deliver_ok(card.stripe.event("charge.dispute.closed", dispute | {"status": "lost"}))
    assert [(e.type, e.data.get("kind")) for e in _events(card)] == [
        ("purchase.completed", "checkout"),
        ("refund.clawed_back", "dispute"),
    ]
