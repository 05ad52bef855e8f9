"""A failed auto-recharge is alerted in the transaction that records the failure, once per failed attempt, whether the
worker's charge or Stripe's webhook reports it, and however often it is reported."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.core.db import unit_of_work
from services.events.repository import events
from services.ledger.accounts import update_email
from services.outbox import repository as outbox_repo
from tests.card.conftest import Card
from tests.card.test_auto_recharge import _configure, _run, _spend, _top_up, _with_saved_card


def _recorded(card: Card) -> tuple[list[Any], list[Any]]:
    with unit_of_work(card.engine) as session:
        found = list(session.execute(select(events).where(events.c.type == "auto_recharge.failed")).all())
        table = outbox_repo.messages
        mails = list(session.execute(select(table).where(table.c.kind == "alert_auto_recharge_failed")).all())
    return found, mails


def test_each_failed_attempt_is_alerted_once(card: Card) -> None:
    customer = _with_saved_card(card)
    with unit_of_work(card.engine) as session:
        update_email(session, customer.account_id, email="payer@example.test", verified=True)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "decline"
    _spend(card, customer, 600, "s1")
    assert _run(card) == 1
    assert _run(card) == 0
    [event], [mail] = _recorded(card)
    purchase_id = event.data["purchase_id"]
    assert event.data == {
        "account_id": customer.account_id,
        "kind": "auto_recharge_failed",
        "purchase_id": purchase_id,
        "amount_credits": 500,
        "amount_cents": 500,
        "failure_code": "insufficient_funds",
        "failure_message": event.data["failure_message"],
        "available_credits": 400,
    }
    assert "insufficient funds" in event.data["failure_message"]
    assert mail.recipient == "payer@example.test"
    assert mail.subject == "Auto-recharge of 500 credits failed"
    assert "$5.00" in mail.body_text

    # The next crossing's attempt fails too: its own alert.
    _top_up(card, customer, 600, "t1")
    _run(card)
    _spend(card, customer, 600, "s2")
    assert _run(card) == 1
    found, mails = _recorded(card)
    assert len(found) == 2
    assert len(mails) == 2
    assert found[1].data["purchase_id"] != purchase_id


def test_a_failure_reported_twice_by_the_webhook_is_alerted_once(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "processing"
    _spend(card, customer, 600, "s1")
    _run(card)
    [intent] = [i for i in card.stripe.intents.values() if i["metadata"].get("kind") == "auto_recharge"]
    intent |= {
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "expired_card", "message": "x"},
    }
    for _ in range(2):
        card.deliver_ok(card.stripe.event("payment_intent.payment_failed", intent))
    found, mails = _recorded(card)
    assert [event.data["failure_code"] for event in found] == ["expired_card"]
    assert mails == []  # the account has no email: the event alone
