"""Refunds and disputes claw back the matching share of the lot; a won dispute reinstates; events come in any order
and any number of times."""

from __future__ import annotations

from typing import Any

from tests.card.conftest import Card, Customer


def _paid(card: Card, pack: str = "standard") -> tuple[Customer, dict[str, Any], dict[str, Any]]:
    customer = card.customer()
    purchase = card.bought(customer, pack=pack)
    card.complete(purchase)
    return customer, purchase, card.stripe.charge_of(purchase["checkout_session_id"])


def _lot(card: Card, purchase: dict[str, Any]) -> Any:
    lot_id = card.purchase(purchase["id"]).lot_id
    [lot] = [lot for lot in card.card_lots(card.purchase(purchase["id"]).account_id) if lot.id == lot_id]
    return lot


def test_a_full_refund_claws_back_the_whole_lot(card: Card) -> None:
    customer, purchase, charge = _paid(card)
    card.deliver_ok(card.stripe.event("charge.refunded", card.stripe.refund(charge["id"], 1_000)))
    assert card.available(customer.account_id) == 0
    assert _lot(card, purchase).clawed_back_credits == 1_000
    assert card.purchase(purchase["id"]).refunded_cents == 1_000


def test_partial_refunds_claw_back_their_share_once_whatever_the_order(card: Card) -> None:
    customer, purchase, charge = _paid(card, "pro")
    first = card.stripe.event("charge.refunded", card.stripe.refund(charge["id"], 500))
    second = card.stripe.event("charge.refunded", card.stripe.refund(charge["id"], 700))
    card.deliver_ok(second)  # cumulative 1,200 first
    card.deliver_ok(first)  # the older cumulative 500 changes nothing
    card.deliver_ok(second)
    assert card.available(customer.account_id) == 2_500 - 1_200
    assert _lot(card, purchase).clawed_back_credits == 1_200
    third = card.stripe.event("charge.refunded", card.stripe.refund(charge["id"], 300))
    card.deliver_ok(third)
    assert card.available(customer.account_id) == 1_000
    assert card.count("card_clawbacks") == 2


def test_a_refund_arriving_before_the_completion_is_clawed_back_when_it_mints(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    charge = card.stripe.refund(card.stripe.charge_of(session["id"])["id"], 400)
    card.deliver_ok(card.stripe.event("charge.refunded", charge))
    # The charge carries no metadata: the PaymentIntent's metadata named the purchase.
    assert card.stripe.sent("GET", f"/v1/payment_intents/{session['payment_intent']}")
    row = card.purchase(purchase["id"])
    assert row.refunded_cents == 400
    assert row.status == "open"
    assert row.lot_id is None
    assert card.available(customer.account_id) == 0
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.available(customer.account_id) == 600
    assert _lot(card, purchase).clawed_back_credits == 400


def test_a_refund_of_credits_already_spent_puts_the_account_in_debt(card: Card) -> None:
    customer, _purchase, charge = _paid(card)
    spent = card.client.post(
        "/v1/charges", json={"amount_credits": 900}, headers={**customer.headers, "Idempotency-Key": "spend"}
    )
    assert spent.status_code == 201, spent.text
    card.deliver_ok(card.stripe.event("charge.refunded", card.stripe.refund(charge["id"], 1_000)))
    balance = card.balance(customer.account_id)
    assert balance.debt_credits == 900
    assert balance.available_credits == 0
    # The next purchase repays the debt first.
    second = card.bought(customer, "k2")
    card.complete(second)
    assert card.balance(customer.account_id).debt_credits == 0
    assert card.available(customer.account_id) == 100


def test_a_refund_for_an_unknown_charge_is_a_finance_exception(card: Card) -> None:
    customer, _purchase, charge = _paid(card)
    stranger = charge | {"id": "ch_unknown", "payment_intent": None, "amount_refunded": 100}
    card.deliver_ok(card.stripe.event("charge.refunded", stranger))
    [exception] = card.exceptions("unknown_charge")
    assert exception.reference == "card:ch_unknown"
    assert exception.amount_cents == 100
    assert card.available(customer.account_id) == 1_000


def test_a_dispute_claws_back_and_a_won_dispute_reinstates(card: Card) -> None:
    customer, purchase, charge = _paid(card)
    dispute = card.stripe.dispute(charge["id"])
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    assert card.available(customer.account_id) == 0
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    card.deliver_ok(card.stripe.event("charge.dispute.closed", dispute | {"status": "won"}))
    assert card.available(customer.account_id) == 1_000
    card.deliver_ok(card.stripe.event("charge.dispute.closed", dispute | {"status": "won"}))
    assert card.available(customer.account_id) == 1_000
    lot = _lot(card, purchase)
    assert lot.clawed_back_credits == 0
    assert lot.remaining_credits == 1_000
    kinds = sorted(row.kind for row in _clawbacks(card))
    assert kinds == ["dispute", "dispute_reinstatement"]


def test_a_lost_dispute_keeps_the_clawback(card: Card) -> None:
    customer, _purchase, charge = _paid(card)
    dispute = card.stripe.dispute(charge["id"], amount_cents=600)
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    card.deliver_ok(card.stripe.event("charge.dispute.closed", dispute | {"status": "lost"}))
    assert card.available(customer.account_id) == 400


def test_a_won_dispute_seen_before_its_creation_never_claws_back(card: Card) -> None:
    customer, _purchase, charge = _paid(card)
    dispute = card.stripe.dispute(charge["id"])
    card.deliver_ok(card.stripe.event("charge.dispute.closed", dispute | {"status": "won"}))
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    assert card.available(customer.account_id) == 1_000
    assert card.count("card_clawbacks") == 0


def test_a_lost_dispute_seen_first_claws_back_once(card: Card) -> None:
    customer, _purchase, charge = _paid(card)
    dispute = card.stripe.dispute(charge["id"])
    card.deliver_ok(card.stripe.event("charge.dispute.closed", dispute | {"status": "lost"}))
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    assert card.available(customer.account_id) == 0
    assert card.count("card_clawbacks") == 1


def test_a_dispute_before_the_completion_claws_back_when_it_mints(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    dispute = card.stripe.dispute(card.stripe.charge_of(session["id"])["id"])
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.available(customer.account_id) == 0


def test_a_refund_and_a_dispute_never_take_more_than_the_lot(card: Card) -> None:
    customer, purchase, charge = _paid(card)
    card.deliver_ok(card.stripe.event("charge.refunded", card.stripe.refund(charge["id"], 600)))
    card.deliver_ok(card.stripe.event("charge.dispute.created", card.stripe.dispute(charge["id"])))
    assert _lot(card, purchase).clawed_back_credits == 1_000
    assert card.available(customer.account_id) == 0
    assert [e.kind for e in card.exceptions()] == ["clawback_exceeds_lot"]


def test_a_dispute_for_an_unknown_charge_is_a_finance_exception(card: Card) -> None:
    _paid(card)
    card.stripe.charges["ch_elsewhere"] = {"id": "ch_elsewhere", "object": "charge", "payment_intent": None}
    dispute = {
        "id": "dp_unknown",
        "object": "dispute",
        "charge": "ch_elsewhere",
        "payment_intent": None,
        "amount": 300,
        "currency": "usd",
        "status": "needs_response",
    }
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    assert [e.reference for e in card.exceptions("unknown_dispute")] == ["card:dp_unknown"]


def _clawbacks(card: Card) -> list[Any]:
    from sqlalchemy import select

    from services.card.repository import clawbacks

    with card.engine.connect() as conn:
        return list(conn.execute(select(clawbacks)))
