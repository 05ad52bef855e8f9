"""Starting a purchase: the Checkout Session Stripe is asked for, idempotency on both sides, and Stripe failing."""

from __future__ import annotations

from tests.card.conftest import Card


def test_a_purchase_creates_a_checkout_session_for_the_packs_price(card: Card) -> None:
    customer = card.customer()
    response = card.buy(customer, pack="pro")
    assert response.status_code == 201, response.text
    purchase = response.json()
    assert purchase["status"] == "open"
    assert purchase["amount_credits"] == 2_500
    assert purchase["amount_cents"] == 2_500
    assert purchase["checkout_url"] == f"https://checkout.stripe.com/c/pay/{purchase['checkout_session_id']}"

    [created] = card.stripe.sent("POST", "/v1/checkout/sessions")
    sent = created.params
    assert created.idempotency_key == f"purchase:{purchase['id']}"
    assert created.headers["Stripe-Version"] == card.settings.stripe_api_version
    assert sent["mode"] == "payment"
    assert sent["line_items[0][price_data][currency]"] == "usd"
    assert sent["line_items[0][price_data][unit_amount]"] == "2500"
    assert sent["line_items[0][quantity]"] == "1"
    assert sent["client_reference_id"] == str(purchase["id"])
    assert sent["metadata[creditrail_purchase_id]"] == str(purchase["id"])
    assert sent["metadata[creditrail_account_id]"] == str(customer.account_id)
    assert sent["metadata[amount_credits]"] == "2500"
    assert sent["metadata[pack]"] == "pro"
    assert sent["payment_intent_data[metadata][creditrail_purchase_id]"] == str(purchase["id"])
    assert "payment_intent_data[setup_future_usage]" not in sent
    assert sent["success_url"] == (
        f"https://app.example/credits/purchase-complete?purchase_id={purchase['id']}&session_id={{CHECKOUT_SESSION_ID}}"
    )
    assert sent["cancel_url"] == f"https://app.example/credits/purchase-cancelled?purchase_id={purchase['id']}"
    assert sent["customer"].startswith("cus_")


def test_one_stripe_customer_is_reused_for_every_purchase_of_an_account(card: Card) -> None:
    customer = card.customer()
    card.bought(customer, "a")
    card.bought(customer, "b", pack="starter")
    other = card.customer("other")
    card.bought(other, "a")
    customers = card.stripe.sent("POST", "/v1/customers")
    assert [c.idempotency_key for c in customers] == [f"customer:{customer.account_id}", f"customer:{other.account_id}"]
    sessions = card.stripe.sent("POST", "/v1/checkout/sessions")
    assert sessions[0].params["customer"] == sessions[1].params["customer"] != sessions[2].params["customer"]


def test_custom_amounts_in_500_credit_steps(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer, amount_credits=1_500)
    assert (purchase["pack"], purchase["amount_credits"], purchase["amount_cents"]) == ("custom", 1_500, 1_500)
    [sent] = card.stripe.sent("POST", "/v1/checkout/sessions")
    assert sent.params["line_items[0][price_data][unit_amount]"] == "1500"


def test_saving_the_card_asks_checkout_to_keep_it_for_off_session_use(card: Card) -> None:
    card.bought(card.customer(), save_card=True)
    [sent] = card.stripe.sent("POST", "/v1/checkout/sessions")
    assert sent.params["payment_intent_data[setup_future_usage]"] == "off_session"


def test_the_same_idempotency_key_returns_the_same_purchase_without_calling_stripe_again(card: Card) -> None:
    customer = card.customer()
    first = card.bought(customer, "same")
    again = card.buy(customer, "same", pack="standard")
    assert again.status_code == 201, "a replay answers what the first answered"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert again.json()["checkout_url"] == first["checkout_url"]
    assert len(card.stripe.sent("POST", "/v1/checkout/sessions")) == 1


def test_an_idempotency_key_reused_for_another_purchase_is_refused_and_writes_nothing(card: Card) -> None:
    customer = card.customer()
    card.bought(customer, "same")
    before = card.snapshot()
    response = card.buy(customer, "same", pack="business")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert card.snapshot() == before


def test_stripe_answering_500_is_a_502_and_leaves_the_purchase_retryable(card: Card) -> None:
    customer = card.customer()
    # The SDK retries once (settings), so two 500s in a row reach us.
    card.stripe.fail("POST", "/v1/checkout/sessions", "500", times=2)
    response = card.buy(customer, "k")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "stripe_unavailable"
    assert error["details"]["retryable"] is True
    purchase = card.purchase(error["details"]["purchase_id"])
    assert purchase.status == "pending"
    assert purchase.stripe_attempts == 1
    assert purchase.last_error.startswith("stripe_unavailable")

    retried = card.buy(customer, "k")
    assert retried.status_code == 201
    assert retried.json()["status"] == "open"
    assert retried.json()["id"] == purchase.id
    keys = {sent.idempotency_key for sent in card.stripe.sent("POST", "/v1/checkout/sessions")}
    assert keys == {f"purchase:{purchase.id}"}
    assert len(card.stripe.sessions) == 1


def test_a_timeout_after_stripe_made_the_session_never_makes_a_second_one(card: Card) -> None:
    customer = card.customer()
    # Stripe makes the session but both answers are lost: the customer sees a gateway timeout.
    card.stripe.fail("POST", "/v1/checkout/sessions", "timeout_after", times=2)
    response = card.buy(customer, "k")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "stripe_timeout"
    purchase_id = response.json()["error"]["details"]["purchase_id"]
    assert card.purchase(purchase_id).status == "pending"
    assert len(card.stripe.sessions) == 1

    retried = card.bought(customer, "k")
    assert retried["id"] == purchase_id
    assert retried["status"] == "open"
    assert len(card.stripe.sessions) == 1
    assert retried["checkout_session_id"] == next(iter(card.stripe.sessions))


def test_a_timeout_the_sdk_retries_is_invisible_and_creates_one_session(card: Card) -> None:
    card.stripe.fail("POST", "/v1/checkout/sessions", "timeout_after", times=1)
    purchase = card.bought(card.customer())
    assert purchase["status"] == "open"
    sent = card.stripe.sent("POST", "/v1/checkout/sessions")
    assert len(sent) == 2
    assert sent[0].idempotency_key == sent[1].idempotency_key
    assert len(card.stripe.sessions) == 1


def test_stripe_unreachable_when_creating_the_customer_is_a_clear_error(card: Card) -> None:
    customer = card.customer()
    card.stripe.fail("POST", "/v1/customers", "timeout", times=2)
    response = card.buy(customer)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "stripe_timeout"
    assert card.stripe.sent("POST", "/v1/checkout/sessions") == []
    assert card.bought(customer)["status"] == "open"


def test_a_purchase_is_visible_to_its_customer_only(card: Card) -> None:
    customer, other = card.customer(), card.customer("other")
    purchase = card.bought(customer)
    mine = card.client.get(f"/v1/card/purchases/{purchase['id']}", headers=customer.headers)
    assert mine.status_code == 200
    assert mine.json()["checkout_url"] == purchase["checkout_url"]
    theirs = card.client.get(f"/v1/card/purchases/{purchase['id']}", headers=other.headers)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "purchase_not_found"


def test_a_checkout_session_without_a_url_fails_the_purchase_with_a_stripe_error(card: Card) -> None:
    customer = card.customer()
    card.stripe.checkout_urls = False

    response = card.buy(customer)

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "stripe_invalid_response"
    [session_id] = card.stripe.sessions
    assert error["details"]["checkout_session_id"] == session_id
    row = card.purchase(error["details"]["purchase_id"])
    assert (row.status, row.checkout_url, row.checkout_session_id) == ("failed", None, session_id)
    assert row.failure_code == "checkout_unavailable"
    assert row.last_error.startswith("stripe_invalid_response")
    # Asked again with the same key, it is the same failed purchase: no second session.
    again = card.buy(customer)
    assert again.json()["status"] == "failed"
    assert len(card.stripe.sent("POST", "/v1/checkout/sessions")) == 1
    # A new purchase, once Stripe gives URLs again, goes through.
    card.stripe.checkout_urls = True
    assert card.bought(customer, "k2")["checkout_url"]
