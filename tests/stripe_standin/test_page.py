"""The test checkout page over plain HTTP (the browser tests drive it in Chromium): paying, declines,
authentication, cancelling, and what the page says."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from services.stripe_standin.server import StripeStandin
from tests.stripe_standin.conftest import Endpoint, Sdk, session_params


def _pay(standin: StripeStandin, session_id: str, number: str, expiry: str = "12 / 40") -> httpx.Response:
    return httpx.post(
        f"{standin.url}/c/pay/{session_id}",
        content=f"cardnumber={quote(number)}&exp-date={quote(expiry)}&cvc=123",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_page_shows_product_amount_and_that_it_is_not_stripe(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    page = httpx.get(created.url)

    assert page.status_code == 200
    assert "Local stand-in for Stripe: this is not Stripe." in page.text
    assert "Standard pack: 1,000 credits" in page.text
    assert "$10.00" in page.text
    assert "name='cardnumber'" in page.text
    assert "id='cancel'" in page.text


def test_paying_with_4242_redirects_to_the_success_url_with_the_session_id(
    client: Sdk, standin: StripeStandin, endpoint: Endpoint
) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    paid = _pay(standin, created.id, "4242 4242 4242 4242")

    assert paid.status_code == 303
    assert paid.headers["location"] == (
        f"http://shop.test/credits/purchase-complete?purchase_id=7&session_id={created.id}"
    )
    session = client.v1.checkout.sessions.retrieve(created.id)
    assert (session.status, session.payment_status) == ("complete", "paid")
    intent = client.v1.payment_intents.retrieve(session.payment_intent)
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (charge.status, charge.paid, charge.amount) == ("succeeded", True, 1_000)
    assert (charge.payment_method_details.card.brand, charge.payment_method_details.card.last4) == ("visa", "4242")
    assert charge.balance_transaction is not None
    # A paid session is closed: paying again does not charge twice.
    again = _pay(standin, created.id, "4242 4242 4242 4242")
    assert again.status_code == 409
    assert len(standin.store.objects["balance_transaction"]) == 1


def test_declined_card_shows_the_decline_and_the_session_stays_open(
    client: Sdk, standin: StripeStandin, endpoint: Endpoint
) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    declined = _pay(standin, created.id, "4000 0000 0000 0002")

    assert declined.status_code == 402
    assert "Your card was declined." in declined.text
    session = client.v1.checkout.sessions.retrieve(created.id)
    assert (session.status, session.payment_status) == ("open", "unpaid")
    intent = client.v1.payment_intents.retrieve(session.payment_intent)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.decline_code == "generic_decline"
    assert endpoint.wait_for("payment_intent.payment_failed").event["data"]["object"]["id"] == intent.id
    assert "balance_transaction" not in standin.store.objects
    # Another card then pays on the same session and PaymentIntent.
    assert _pay(standin, created.id, "4242424242424242").status_code == 303
    assert client.v1.payment_intents.retrieve(session.payment_intent).status == "succeeded"


def test_card_needing_authentication_asks_to_confirm_then_pays(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    asked = _pay(standin, created.id, "4000 0000 0000 3220")

    assert asked.status_code == 200
    assert "Your bank asks you to confirm this payment" in asked.text
    assert client.v1.checkout.sessions.retrieve(created.id).payment_status == "unpaid"
    confirmed = httpx.post(
        f"{standin.url}/c/pay/{created.id}/authenticate",
        content="decision=approve",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert confirmed.status_code == 303
    assert created.id in confirmed.headers["location"]
    assert client.v1.checkout.sessions.retrieve(created.id).payment_status == "paid"


def test_failed_authentication_declines_and_keeps_the_session_open(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    _pay(standin, created.id, "4000000000003220")

    failed = httpx.post(
        f"{standin.url}/c/pay/{created.id}/authenticate",
        content="decision=fail",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert failed.status_code == 402
    assert "unable to authenticate" in failed.text
    assert client.v1.checkout.sessions.retrieve(created.id).status == "open"


def test_bad_card_details_are_refused_without_touching_the_session(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    assert "Your card number is incorrect." in _pay(standin, created.id, "4242 4242 4242 4241").text
    assert "expiration date" in _pay(standin, created.id, "4242424242424242", expiry="13/40").text
    assert "expiration date" in _pay(standin, created.id, "4242424242424242", expiry="01/20").text
    session = client.v1.checkout.sessions.retrieve(created.id)
    assert session.payment_intent is None
    assert session.status == "open"


def test_cancel_returns_to_the_cancel_url_and_leaves_the_session_open(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    cancelled = httpx.get(f"{standin.url}/c/pay/{created.id}/cancel")

    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == "http://shop.test/credits/purchase-cancelled?purchase_id=7"
    assert client.v1.checkout.sessions.retrieve(created.id).status == "open"


def test_unknown_and_expired_sessions_cannot_be_paid(client: Sdk, standin: StripeStandin) -> None:
    assert httpx.get(f"{standin.url}/c/pay/cs_test_nope").status_code == 404
    created = client.v1.checkout.sessions.create(session_params())
    client.v1.checkout.sessions.expire(created.id)

    assert "expired" in httpx.get(created.url).text
    assert _pay(standin, created.id, "4242424242424242").status_code == 409
    assert client.v1.checkout.sessions.retrieve(created.id).payment_status == "unpaid"


def test_a_card_that_is_not_a_test_card_is_declined(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())

    declined = _pay(standin, created.id, "4111 1111 1111 1111")

    assert declined.status_code == 402
    assert "accepts only test cards" in declined.text
    intent = client.v1.payment_intents.retrieve(client.v1.checkout.sessions.retrieve(created.id).payment_intent)
    assert intent.last_payment_error.decline_code == "test_mode_live_card"
