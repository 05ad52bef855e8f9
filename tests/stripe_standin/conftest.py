"""The stand-in running on a free local port, a webhook endpoint of our own to receive what it sends, and the real
``stripe`` SDK (and creditrail's gateway) pointed at it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from pydantic import SecretStr

from services.card.stripe_client import StripeGateway, build_stripe_client
from services.core.settings import Settings
from services.stripe_standin.server import StandinConfig, StripeStandin, start_standin

WAIT_SECONDS = 10.0
# The SDK's client, called with plain dicts as creditrail calls it (its typed parameter dicts are not used here).
Sdk = Any


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Endpoint:
    """A webhook endpoint that records what it receives and answers each request with the next status in
    ``statuses`` (200 once they run out)."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/v1/stripe/webhook"

    def wait_for(self, event_type: str, timeout: float = WAIT_SECONDS) -> Received:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for item in self.received:
                    if item.event["type"] == event_type:
                        return item
                left = deadline - time.monotonic()
                assert left > 0, f"no {event_type} webhook within {timeout} s"
                self.changed.wait(left)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    holder: list[Endpoint] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            target = holder[0]
            with target.changed:
                status = target.statuses.pop(0) if target.statuses else 200
                target.received.append(Received(body, dict(self.headers.items())))
                target.changed.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Endpoint(server))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


@pytest.fixture
def standin(endpoint: Endpoint) -> Iterator[StripeStandin]:
    running = start_standin(
        StandinConfig(
            environment="test",
            webhook_url=endpoint.url,
            webhook_backoff_initial_seconds=0.05,
            webhook_backoff_max_seconds=0.2,
            expiry_check_seconds=0.05,
        )
    )
    yield running
    running.stop()


@pytest.fixture
def client(standin: StripeStandin) -> Sdk:
    return stripe.StripeClient(
        standin.config.secret_key,
        base_addresses={"api": standin.url},
        max_network_retries=0,
    )


def standin_settings(standin: StripeStandin, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "stripe_secret_key": SecretStr(standin.config.secret_key),
        "stripe_webhook_secrets": [SecretStr(standin.config.webhook_secret)],
        "stripe_api_base": standin.url,
        "stripe_max_network_retries": 0,
    }
    return Settings(**(values | overrides))


@pytest.fixture
def gateway(standin: StripeStandin) -> StripeGateway:
    settings = standin_settings(standin)
    return StripeGateway(build_stripe_client(settings), settings)


def session_params(**overrides: Any) -> dict[str, Any]:
    """A Checkout Session as creditrail asks for one (services.card.purchases.checkout_session_params)."""
    params: dict[str, Any] = {
        "mode": "payment",
        "client_reference_id": "7",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 1_000,
                    "product_data": {"name": "Standard pack: 1,000 credits"},
                },
            }
        ],
        "metadata": {"creditrail_purchase_id": "7", "creditrail_account_id": "3", "amount_credits": "1000"},
        "payment_intent_data": {"metadata": {"creditrail_purchase_id": "7", "creditrail_account_id": "3"}},
        "success_url": "http://shop.test/credits/purchase-complete?purchase_id=7&session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/credits/purchase-cancelled?purchase_id=7",
    }
    return params | overrides
