"""Fulfilment: one mint per Checkout Session whoever asks (webhook, success page, a redelivery), only when paid
the right amount; delayed payments, expiry, failures; and payments we cannot match (finance exceptions)."""

from __future__ import annotations

from tests.card.conftest import Card


def test_a_completed_checkout_mints_the_purchase(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer, pack="pro")
    session = card.complete(purchase)
    row = card.purchase(purchase["id"])
    assert row.status == "completed"
    assert row.lot_id is not None
    assert row.completed_at is not None
    assert row.amount_paid_cents == 2_500
    assert row.payment_intent_id == session["payment_intent"]
    [lot] = card.card_lots(customer.account_id)
    assert (lot.id, lot.external_ref, lot.credits, lot.cost_basis_cents) == (row.lot_id, session["id"], 2_500, 2_500)
    assert card.available(customer.account_id) == 2_500


def test_the_same_event_delivered_again_mints_nothing_more(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    event = card.stripe.event("checkout.session.completed", session)
    for _ in range(3):
        card.deliver_ok(event)
    # Stripe may also send a second event (another id) for the same session.
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.available(customer.account_id) == 1_000
    assert len(card.card_lots(customer.account_id)) == 1


def test_the_success_page_mints_before_the_webhook_and_the_webhook_then_changes_nothing(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    confirmed = card.client.post(f"/v1/card/purchases/{purchase['id']}/confirm", headers=customer.headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["outcome"] == "minted"
    assert confirmed.json()["purchase"]["status"] == "completed"
    assert card.stripe.sent("GET", f"/v1/checkout/sessions/{session['id']}")
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.inbox_event(card.stripe.events[-1]["id"]).outcome == "already_fulfilled"
    again = card.client.post(f"/v1/card/purchases/{purchase['id']}/confirm", headers=customer.headers)
    assert again.json()["outcome"] == "already_fulfilled"
    assert card.available(customer.account_id) == 1_000


def test_the_success_page_before_payment_says_so_and_mints_nothing(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    response = card.client.post(f"/v1/card/purchases/{purchase['id']}/confirm", headers=customer.headers)
    assert response.status_code == 200
    assert response.json()["outcome"] == "awaiting_payment"
    assert card.available(customer.account_id) == 0


def test_the_success_page_of_a_purchase_without_a_session_is_refused(card: Card) -> None:
    customer = card.customer()
    card.stripe.fail("POST", "/v1/checkout/sessions", "500", times=2)
    purchase_id = card.buy(customer).json()["error"]["details"]["purchase_id"]
    before = card.snapshot()
    response = card.client.post(f"/v1/card/purchases/{purchase_id}/confirm", headers=customer.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "purchase_not_confirmable"
    assert card.snapshot() == before


def test_a_delayed_payment_mints_when_it_settles(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.complete(purchase, payment_status="unpaid")
    row = card.purchase(purchase["id"])
    assert row.status == "processing"
    assert row.failure_code == "payment_pending"
    assert card.available(customer.account_id) == 0
    settled = card.stripe.settle_async(purchase["checkout_session_id"])
    card.deliver_ok(card.stripe.event("checkout.session.async_payment_succeeded", settled))
    assert card.purchase(purchase["id"]).status == "completed"
    assert card.available(customer.account_id) == 1_000


def test_a_delayed_payment_that_fails_marks_the_purchase_failed(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.complete(purchase, payment_status="unpaid")
    card.deliver_ok(card.stripe.event("checkout.session.async_payment_failed", session))
    row = card.purchase(purchase["id"])
    assert row.status == "failed"
    assert row.failure_code == "payment_failed"
    assert card.available(customer.account_id) == 0


def test_an_expired_checkout_marks_the_purchase_expired(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.deliver_ok(card.stripe.event("checkout.session.expired", card.stripe.expire(purchase["checkout_session_id"])))
    row = card.purchase(purchase["id"])
    assert row.status == "expired"
    assert row.failure_code == "expired"


def test_an_expiry_arriving_after_the_completion_changes_nothing(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.complete(purchase)
    card.deliver_ok(card.stripe.event("checkout.session.expired", session | {"status": "expired"}))
    assert card.purchase(purchase["id"]).status == "completed"
    assert card.available(customer.account_id) == 1_000


def test_a_session_whose_amount_does_not_match_its_purchase_mints_nothing(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer, pack="business")
    session = card.stripe.pay(purchase["checkout_session_id"], amount_total=500)
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    row = card.purchase(purchase["id"])
    assert row.status == "review"
    assert row.failure_code == "amount_mismatch"
    assert row.lot_id is None
    [exception] = card.exceptions("amount_mismatch")
    assert exception.reference == f"card:{session['id']}"
    assert exception.amount_cents == 500
    assert exception.details["expected_cents"] == 5_000
    assert exception.status == "open"
    assert card.available(customer.account_id) == 0
    # The same event again raises nothing new.
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert len(card.exceptions()) == 1


def test_a_session_in_another_currency_mints_nothing(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"]) | {"currency": "eur"}
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.purchase(purchase["id"]).status == "review"
    assert card.exceptions("amount_mismatch")[0].details["currency"] == "eur"


def test_an_event_for_an_unknown_purchase_is_a_finance_exception(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    stranger = session | {
        "id": "cs_test_unknown",
        "client_reference_id": "999999",
        "metadata": {"creditrail_purchase_id": "999999", "creditrail_account_id": "999999"},
    }
    before = card.snapshot()
    card.deliver_ok(card.stripe.event("checkout.session.completed", stranger))
    [exception] = card.exceptions("unknown_purchase")
    assert exception.reference == "card:cs_test_unknown"
    assert exception.amount_cents == 1_000
    assert exception.account_id == 999_999
    after = card.snapshot()
    for table in ("stripe_webhook_events", "finance_exceptions", "finance_exceptions.amount_cents"):
        after.pop(table), before.pop(table)
    assert after == before


def test_an_event_without_our_metadata_is_a_finance_exception(card: Card) -> None:
    card.customer()
    session = card.stripe.event(
        "checkout.session.completed",
        {
            "id": "cs_test_foreign",
            "object": "checkout.session",
            "status": "complete",
            "payment_status": "paid",
            "amount_total": 700,
            "currency": "usd",
            "metadata": {},
        },
    )
    card.deliver_ok(session)
    assert card.inbox_event(session["id"]).outcome == "exception:unknown_purchase"
    assert [e.reference for e in card.exceptions("unknown_purchase")] == ["card:cs_test_foreign"]


def test_a_session_naming_another_account_mints_nothing(card: Card) -> None:
    customer, other = card.customer(), card.customer("other")
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    session["metadata"]["creditrail_account_id"] = str(other.account_id)
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert card.exceptions("account_mismatch")[0].details["metadata_account_id"] == other.account_id
    assert card.available(customer.account_id) == card.available(other.account_id) == 0


def test_an_event_that_lacks_the_payment_status_is_checked_with_stripe(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    thin = {"id": session["id"], "object": "checkout.session"}
    card.deliver_ok(card.stripe.event("checkout.session.completed", thin))
    assert card.stripe.sent("GET", f"/v1/checkout/sessions/{session['id']}")
    assert card.available(customer.account_id) == 1_000


def test_a_full_event_needs_one_stripe_call_for_the_card_that_paid(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    requests_before = len(card.stripe.requests)
    session = card.complete(purchase, payment_method="pm_card_mastercard")
    [asked] = card.stripe.requests[requests_before:]
    assert (asked.method, asked.path) == ("GET", f"/v1/payment_intents/{session['payment_intent']}")
    assert asked.params["expand"] == ["latest_charge"]
    assert card.available(customer.account_id) == 1_000
    row = card.purchase(purchase["id"])
    assert (row.card_brand, row.card_last4) == ("mastercard", "4444")


def test_a_session_we_never_heard_back_about_is_matched_by_its_metadata(card: Card) -> None:
    customer = card.customer()
    card.stripe.fail("POST", "/v1/checkout/sessions", "timeout_after", times=2)
    purchase_id = card.buy(customer).json()["error"]["details"]["purchase_id"]
    [session_id] = card.stripe.sessions
    card.deliver_ok(card.stripe.event("checkout.session.completed", card.stripe.pay(session_id)))
    row = card.purchase(purchase_id)
    assert row.status == "completed"
    assert row.checkout_session_id == session_id
    assert card.available(customer.account_id) == 1_000
