"""Webhooks from the stand-in: signed as Stripe signs them, verifiable by the SDK and by creditrail, and retried
with backoff while the endpoint fails."""

from __future__ import annotations

import time

import pytest
import stripe
from pydantic import SecretStr

from services.card.webhooks import verify_signature
from services.stripe_standin.server import StripeStandin
from services.stripe_standin.webhooks import WebhookSender
from tests.stripe_standin.conftest import WAIT_SECONDS, Endpoint, Sdk, session_params, standin_settings


def test_webhook_signature_verifies_with_the_sdk_and_creditrail(
    client: Sdk, standin: StripeStandin, endpoint: Endpoint
) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    standin.store.pay_checkout(created.id, number="4242 4242 4242 4242", expiry="12 / 40", cvc="123")

    received = endpoint.wait_for("checkout.session.completed")
    header = received.headers["Stripe-Signature"]
    assert header.startswith("t=")
    assert ",v1=" in header

    event = stripe.Webhook.construct_event(received.body.decode(), header, standin.config.webhook_secret)
    assert event.type == "checkout.session.completed"
    assert event.data.object.id == created.id
    assert event.data.object.payment_status == "paid"
    settings = standin_settings(standin)
    assert verify_signature(received.body, header, settings, time.time()) == received.body.decode()
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(received.body.decode(), header, "whsec_another_secret")
    # The event sent is the one events.list returns.
    listed = client.v1.events.list({"types": ["checkout.session.completed"]})
    assert [item.id for item in listed.data] == [event.id]


def test_paying_sends_the_events_stripe_sends(client: Sdk, standin: StripeStandin, endpoint: Endpoint) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    standin.store.pay_checkout(created.id, number="4242424242424242", expiry="12/40", cvc="123")

    endpoint.wait_for("checkout.session.completed")
    sent = [item.event["type"] for item in endpoint.received]
    assert sent == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]


def test_a_failing_endpoint_gets_the_event_again_with_backoff(
    client: Sdk, standin: StripeStandin, endpoint: Endpoint
) -> None:
    endpoint.statuses = [500, 503]
    created = client.v1.checkout.sessions.create(session_params())
    client.v1.checkout.sessions.expire(created.id)

    received = endpoint.wait_for("checkout.session.expired")
    sender = standin.sender
    assert sender.wait(lambda attempts: any(a.delivered for a in attempts), WAIT_SECONDS)
    tries = [(a.attempt, a.status_code) for a in sender.attempts if a.event_type == "checkout.session.expired"]
    assert tries == [(1, 500), (2, 503), (3, 200)]
    # The same event each time (one id), each attempt signed.
    assert {item.event["id"] for item in endpoint.received} == {received.event["id"]}
    assert all(item.headers["Stripe-Signature"].startswith("t=") for item in endpoint.received)
    assert stripe.Webhook.construct_event(
        received.body.decode(), received.headers["Stripe-Signature"], standin.config.webhook_secret
    )


def test_backoff_doubles_up_to_its_cap() -> None:
    sender = WebhookSender(None, "whsec_x", backoff_initial_seconds=1.0, backoff_max_seconds=30.0)
    assert [sender.backoff_seconds(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_expired_session_is_announced_by_webhook_once_its_time_passes(
    client: Sdk, standin: StripeStandin, endpoint: Endpoint
) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    # The stand-in's clock moves past the session's expiry; its own timer notices.
    standin.store.clock = lambda: float(created.expires_at + 1)

    received = endpoint.wait_for("checkout.session.expired")

    assert received.event["data"]["object"]["id"] == created.id
    assert received.event["data"]["object"]["status"] == "expired"
    assert client.v1.checkout.sessions.retrieve(created.id).status == "expired"


def test_webhook_secret_is_one_creditrail_accepts(standin: StripeStandin) -> None:
    settings = standin_settings(standin)
    assert settings.stripe_configured
    assert settings.stripe_webhook_secrets == [SecretStr(standin.config.webhook_secret)]
