"""The stand-in's API through the real ``stripe`` SDK: objects, lists, idempotency, errors, off-session charges."""

from __future__ import annotations

import functools

import httpx
import pytest
import stripe

from services.card.stripe_client import StripeGateway
from services.card.stripe_objects import CardDetails, CheckoutSessionData
from services.stripe_standin.server import StripeStandin
from tests.stripe_standin.conftest import Sdk, session_params


def test_checkout_session_is_created_and_read_back_with_stripes_shape(client: Sdk, standin: StripeStandin) -> None:
    customer = client.v1.customers.create({"metadata": {"creditrail_account_id": "3"}})
    created = client.v1.checkout.sessions.create(session_params(customer=customer.id))

    read = client.v1.checkout.sessions.retrieve(created.id)
    assert read.id == created.id
    assert read.id.startswith("cs_test_")
    assert read.object == "checkout.session"
    assert (read.status, read.payment_status, read.mode) == ("open", "unpaid", "payment")
    assert (read.amount_total, read.amount_subtotal, read.currency) == (1_000, 1_000, "usd")
    assert read.customer == customer.id
    assert read.client_reference_id == "7"
    assert read.metadata.to_dict() == session_params()["metadata"]
    assert read.url == f"{standin.url}/c/pay/{created.id}"
    assert read.payment_intent is None
    assert read.expires_at == read.created + 86_400
    # creditrail's own parser reads everything fulfilment needs from it.
    parsed = CheckoutSessionData.parse(read.to_dict())
    assert parsed.complete_enough
    assert parsed.purchase_id == 7


def test_session_list_pages_newest_first_with_has_more_and_starting_after(client: Sdk) -> None:
    made = [client.v1.checkout.sessions.create(session_params()).id for _ in range(5)]

    seen: list[str] = []
    pages = 0
    after: str | None = None
    while True:
        params: dict[str, object] = {"limit": 2, "created": {"gte": 0}}
        if after:
            params["starting_after"] = after
        page = client.v1.checkout.sessions.list(params)
        pages += 1
        seen += [item.id for item in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert pages == 3
    assert seen == list(reversed(made))


def test_same_idempotency_key_returns_the_same_session(client: Sdk, standin: StripeStandin) -> None:
    first = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "purchase:7"})
    again = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "purchase:7"})
    other = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "purchase:8"})

    assert again.id == first.id
    assert other.id != first.id
    assert len(standin.store.objects["checkout.session"]) == 2


def test_idempotency_key_reused_with_other_parameters_is_refused(client: Sdk) -> None:
    client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "purchase:9"})
    with pytest.raises(stripe.IdempotencyError) as refused:
        client.v1.checkout.sessions.create(session_params(client_reference_id="10"), {"idempotency_key": "purchase:9"})
    assert refused.value.http_status == 400


def test_unknown_ids_get_stripes_resource_missing_error(client: Sdk, standin: StripeStandin) -> None:
    for service, object_id in (
        (client.v1.checkout.sessions, "cs_test_nope"),
        (client.v1.payment_intents, "pi_nope"),
        (client.v1.charges, "ch_nope"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            service.retrieve(object_id)
        assert missing.value.http_status == 404
        assert missing.value.code == "resource_missing"

    raw = httpx.get(
        f"{standin.url}/v1/charges/ch_nope", headers={"Authorization": f"Bearer {standin.config.secret_key}"}
    )
    assert raw.status_code == 404
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "resource_missing"
    assert error["message"] == "No such charge: 'ch_nope'"


def test_requests_without_the_secret_key_are_refused(standin: StripeStandin) -> None:
    wrong = stripe.StripeClient("sk_test_someone_else", base_addresses={"api": standin.url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError) as refused:
        wrong.v1.checkout.sessions.list({"limit": 1})
    assert refused.value.http_status == 401

    anonymous = httpx.get(f"{standin.url}/v1/events")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"


def test_unrecognised_urls_and_missing_parameters_are_client_errors(client: Sdk, standin: StripeStandin) -> None:
    unknown = httpx.get(
        f"{standin.url}/v1/subscriptions", headers={"Authorization": f"Bearer {standin.config.secret_key}"}
    )
    assert unknown.status_code == 404
    assert "Unrecognized request URL" in unknown.json()["error"]["message"]

    params = session_params()
    del params["success_url"]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.create(params)
    assert missing.value.http_status == 400
    assert missing.value.code == "parameter_missing"
    assert missing.value.param == "success_url"


def test_creditrails_gateway_makes_every_call_it_needs(gateway: StripeGateway, standin: StripeStandin) -> None:
    customer_id = gateway.create_customer(account_id=3, idempotency_key="customer:3")
    assert gateway.create_customer(account_id=3, idempotency_key="customer:3") == customer_id

    created = gateway.create_checkout_session(session_params(customer=customer_id), idempotency_key="purchase:7")
    assert gateway.retrieve_checkout_session(created.id) == created
    assert standin.store.pay_checkout(created.id, number="4242424242424242", expiry="12/40", cvc="123").redirect_url

    paid = gateway.retrieve_checkout_session(created.id)
    assert (paid.status, paid.payment_status, paid.amount_total) == ("complete", "paid", 1_000)
    assert paid.payment_intent is not None
    intent = gateway.retrieve_payment_intent(paid.payment_intent)
    assert (intent.status, intent.amount_received, intent.purchase_id) == ("succeeded", 1_000, 7)
    assert intent.latest_charge is not None
    charge = gateway.retrieve_charge(intent.latest_charge)
    assert charge["payment_method_details"]["card"]["brand"] == "visa"
    assert charge["payment_method_details"]["card"]["last4"] == "4242"

    sessions = gateway.list_checkout_sessions(created_gte=0)
    assert [item["id"] for item in sessions.data] == [created.id]
    transactions = gateway.list_balance_transactions(created_gte=0, created_lt=2**40)
    assert len(transactions.data) == 1
    transaction = transactions.data[0]
    # Stripe's fee on a US card: 2.9% + 30 cents.
    assert (transaction["amount"], transaction["fee"], transaction["net"]) == (1_000, 59, 941)
    assert transaction["source"]["id"] == intent.latest_charge  # expanded
    events = gateway.list_events(created_gte=0, types=["checkout.session.completed", "payment_intent.succeeded"])
    assert [event["type"] for event in events.data] == ["checkout.session.completed", "payment_intent.succeeded"]


def test_the_card_that_paid_comes_expanded_as_stripe_gives_it(
    gateway: StripeGateway, standin: StripeStandin, client: Sdk
) -> None:
    created = gateway.create_checkout_session(session_params(), idempotency_key="purchase:8")
    assert standin.store.pay_checkout(created.id, number="5555555555554444", expiry="12/40", cvc="123").redirect_url
    mastercard = CardDetails(brand="mastercard", last4="4444")
    paid = gateway.retrieve_checkout_session(created.id)  # payment_intent.latest_charge expanded
    assert paid.card == mastercard
    assert paid.card.label == "Mastercard ending 4444"
    assert paid.payment_intent is not None  # still read as the id, expanded or not
    assert gateway.retrieve_payment_intent(paid.payment_intent).card is None  # the charge's id only
    assert gateway.card_of_payment_intent(paid.payment_intent) == mastercard
    listed = gateway.list_checkout_sessions(created_gte=0, with_card=True).data
    assert CheckoutSessionData.parse(listed[0]).card == mastercard
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.retrieve(paid.payment_intent, {"expand": ["amount"]})
    assert refused.value.http_status == 400


def _saved_card(gateway: StripeGateway, standin: StripeStandin, number: str) -> tuple[str, str]:
    """A customer and the card they saved paying a Checkout Session that asked to keep it."""
    customer_id = gateway.create_customer(account_id=3, idempotency_key=f"customer:{number}")
    params = session_params(customer=customer_id)
    params["payment_intent_data"]["setup_future_usage"] = "off_session"
    created = gateway.create_checkout_session(params, idempotency_key=f"purchase:{number}")
    store = standin.store
    outcome = store.pay_checkout(created.id, number=number, expiry="12/40", cvc="123")
    if outcome.outcome == "requires_action":
        store.authenticate_checkout(created.id, approve=True)
    paid = gateway.retrieve_checkout_session(created.id)
    assert paid.payment_status == "paid"
    assert paid.payment_intent is not None
    intent = gateway.retrieve_payment_intent(paid.payment_intent)
    assert intent.setup_future_usage == "off_session"
    assert intent.payment_method is not None
    return customer_id, intent.payment_method


def _off_session(customer_id: str, method: str) -> dict[str, object]:
    return {
        "amount": 1_000,
        "currency": "usd",
        "customer": customer_id,
        "payment_method": method,
        "off_session": True,
        "confirm": True,
        "metadata": {"creditrail_purchase_id": "11", "kind": "auto_recharge"},
    }


def test_off_session_charge_on_a_saved_card_succeeds(gateway: StripeGateway, standin: StripeStandin) -> None:
    customer_id, method = _saved_card(gateway, standin, "4242424242424242")
    assert standin.store.retrieve("payment_method", method)["customer"] == customer_id

    result = gateway.charge_off_session(_off_session(customer_id, method), idempotency_key="auto-recharge:3:1")

    assert not result.declined
    assert result.intent is not None
    assert (result.intent.status, result.intent.amount_received, result.intent.purchase_id) == ("succeeded", 1_000, 11)
    assert result.intent.card == CardDetails(brand="visa", last4="4242")
    again = gateway.charge_off_session(_off_session(customer_id, method), idempotency_key="auto-recharge:3:1")
    assert again.intent is not None
    assert again.intent.id == result.intent.id


def test_off_session_charge_on_a_card_that_needs_authentication_fails_authentication_required(
    gateway: StripeGateway, standin: StripeStandin
) -> None:
    customer_id, method = _saved_card(gateway, standin, "4000000000003220")

    result = gateway.charge_off_session(_off_session(customer_id, method), idempotency_key="auto-recharge:3:2")

    assert result.declined
    assert result.error_code == "authentication_required"
    assert result.intent is not None
    assert result.intent.status == "requires_payment_method"
    assert result.intent.error_code == "authentication_required"
    failed = gateway.list_events(created_gte=0, types=["payment_intent.payment_failed"])
    assert [event["data"]["object"]["id"] for event in failed.data] == [result.intent.id]


def test_session_expires_when_its_time_passes_and_says_so(client: Sdk, standin: StripeStandin) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    standin.store.clock = lambda: float(created.expires_at)

    expired = standin.store.expire_due()

    assert expired == [created.id]
    assert client.v1.checkout.sessions.retrieve(created.id).status == "expired"
    events = client.v1.events.list({"types": ["checkout.session.expired"]})
    assert [event.data.object.id for event in events.data] == [created.id]


def test_expire_endpoint_closes_an_open_session_once(client: Sdk) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    assert client.v1.checkout.sessions.expire(created.id).status == "expired"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(created.id)


def test_lists_keep_to_created_bounds_and_page_both_ways(client: Sdk, standin: StripeStandin) -> None:
    made: dict[int, str] = {}
    for stamp in (1_000, 2_000, 3_000, 4_000, 5_000):
        standin.store.clock = functools.partial(float, stamp)
        made[stamp] = client.v1.checkout.sessions.create(session_params()).id

    within = client.v1.checkout.sessions.list({"created": {"gte": 2_000, "lt": 5_000}})
    assert [item.id for item in within.data] == [made[4_000], made[3_000], made[2_000]]
    assert not within.has_more

    older = client.v1.checkout.sessions.list({"starting_after": made[4_000], "limit": 2})
    assert [item.id for item in older.data] == [made[3_000], made[2_000]]
    assert older.has_more
    newer = client.v1.checkout.sessions.list({"ending_before": made[2_000], "limit": 2})
    assert [item.id for item in newer.data] == [made[4_000], made[3_000]]
    assert newer.has_more

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.checkout.sessions.list({"starting_after": "cs_test_nope"})
    assert unknown.value.param == "starting_after"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.list({"limit": 101})


def test_a_declined_charge_answers_402_with_stripes_card_error(standin: StripeStandin) -> None:
    body = "amount=1000&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true&off_session=true"
    headers = {
        "Authorization": f"Bearer {standin.config.secret_key}",
        "Content-Type": "application/x-www-form-urlencoded",
        "Idempotency-Key": "decline-1",
    }

    declined = httpx.post(f"{standin.url}/v1/payment_intents", content=body, headers=headers)
    replayed = httpx.post(f"{standin.url}/v1/payment_intents", content=body, headers=headers)

    assert declined.status_code == 402
    error = declined.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == ("card_error", "card_declined", "generic_decline")
    assert error["message"] == "Your card was declined."
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert error["payment_intent"]["last_payment_error"]["decline_code"] == "generic_decline"
    assert replayed.status_code == 402
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == declined.json()
