"""The Stripe client is built in one place from settings, and Stripe's failures become our errors."""

from __future__ import annotations

import pytest
import stripe
from pydantic import SecretStr

from services.card.errors import StripeRejected, StripeTimeout, StripeUnavailable
from services.card.stripe_client import StripeGateway, build_stripe_client, default_gateway
from services.core.errors import UpstreamUnavailable
from services.core.settings import Settings
from tests.card.stripe_fake import FakeStripe


def _gateway(**overrides: object) -> tuple[StripeGateway, FakeStripe]:
    values: dict[str, object] = {
        "stripe_secret_key": SecretStr("sk_test_x"),
        "stripe_api_base": "http://stripe.test/",
        "stripe_max_network_retries": 0,
    }
    settings = Settings(**(values | overrides))  # type: ignore[arg-type]
    fake = FakeStripe()
    return StripeGateway(build_stripe_client(settings, http_client=fake), settings), fake


def test_the_client_uses_the_configured_base_key_and_pinned_version() -> None:
    gateway, fake = _gateway(stripe_api_version="2026-10-28.endive")
    gateway.create_customer(account_id=7, idempotency_key="customer:7")
    [sent] = fake.requests
    assert sent.path == "/v1/customers"
    assert sent.params == {"metadata[creditrail_account_id]": "7"}
    assert sent.headers["Authorization"] == "Bearer sk_test_x"
    assert sent.headers["Stripe-Version"] == "2026-10-28.endive"
    assert sent.idempotency_key == "customer:7"


def test_the_idempotency_namespace_prefixes_every_key() -> None:
    gateway, fake = _gateway(stripe_idempotency_namespace="staging:")
    gateway.create_customer(account_id=7, idempotency_key="customer:7")
    assert fake.requests[0].idempotency_key == "staging:customer:7"


def test_the_default_client_talks_over_requests_with_the_configured_timeouts() -> None:
    settings = Settings(
        stripe_connect_timeout_seconds=2.5, stripe_read_timeout_seconds=9.0, stripe_max_network_retries=4
    )
    client = build_stripe_client(settings)
    requestor = client._requestor
    assert isinstance(requestor._client, stripe.RequestsClient)
    assert requestor._client._timeout == (2.5, 9.0)
    assert requestor._options.max_network_retries == 4
    assert requestor._options.base_addresses["api"] == "https://api.stripe.com"
    assert default_gateway(settings) is default_gateway(settings)


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [("500", StripeUnavailable, 502), ("timeout", StripeTimeout, 504), ("timeout_after", StripeTimeout, 504)],
)
def test_stripe_failures_become_gateway_errors(kind: str, error: type[UpstreamUnavailable], status: int) -> None:
    gateway, fake = _gateway()
    fake.fail("GET", "/v1/checkout/sessions/", kind)
    with pytest.raises(error) as raised:
        gateway.retrieve_checkout_session("cs_x")
    assert raised.value.status_code == status
    assert raised.value.details["retryable"] is True


def test_a_refused_request_is_not_retryable() -> None:
    gateway, _fake = _gateway()
    with pytest.raises(StripeRejected) as raised:
        gateway.retrieve_checkout_session("cs_missing")
    assert raised.value.status_code == 502
    assert raised.value.details["retryable"] is False
    assert raised.value.details["stripe_status"] == 404


def test_the_sdk_retries_a_500_when_allowed() -> None:
    gateway, fake = _gateway(stripe_max_network_retries=2)
    session = fake._create_session(
        {
            "line_items[0][price_data][unit_amount]": "500",
            "line_items[0][price_data][currency]": "usd",
            "mode": "payment",
        }
    )
    fake.fail("GET", "/v1/checkout/sessions/", "500", times=2)
    assert gateway.retrieve_checkout_session(session["id"]).amount_total == 500
    assert len(fake.requests) == 3
