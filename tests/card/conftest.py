"""The card rail's test harness: an app on the test's database (SQLite and PostgreSQL), wired to an offline Stripe
(the real SDK over :class:`FakeStripe`), with helpers to buy, pay and deliver signed webhooks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.apikeys.service import issue_key
from services.app.app import create_app
from services.app.models import metadata
from services.card import repository as repo
from services.card.flows.inbox import InlineProcessor
from services.card.flows.intake import InboxWriter
from services.card.stripe_client import StripeGateway, build_stripe_client
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.ledger.balance import get_balance
from services.ledger.minting import mint
from services.ledger.system_accounts import SystemAccount
from services.review.schemas import ExceptionOut
from services.review.service import list_exceptions
from tests.card.stripe_fake import API_BASE, FakeStripe, sign, to_json

WEBHOOK_SECRET = "whsec_test_current"
OLD_WEBHOOK_SECRET = "whsec_test_previous"
RECEIPT_LINK_SECRET = "receipt-links-test-0123456789abcdef0123456789"


def card_settings(engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": str(engine.url),
        "stripe_secret_key": SecretStr("sk_test_card_rail"),
        "stripe_webhook_secrets": [SecretStr(WEBHOOK_SECRET), SecretStr(OLD_WEBHOOK_SECRET)],
        "stripe_api_base": API_BASE,
        "stripe_max_network_retries": 1,
        "public_base_url": "https://app.example",
        "receipt_link_secret": SecretStr(RECEIPT_LINK_SECRET),
    }
    return Settings(**(values | overrides))


@dataclass
class Customer:
    account_id: int
    headers: dict[str, str]


@dataclass
class Card:
    client: TestClient
    engine: Engine
    settings: Settings
    stripe: FakeStripe
    gateway: StripeGateway
    admin: dict[str, str]

    # --- people -----------------------------------------------------------------------------------------------

    def customer(self, name: str = "acme", credits: int = 0) -> Customer:
        with unit_of_work(self.engine) as session:
            account_id = create_customer_account(session, name=name)
            issued = issue_key(session, role="customer", account_id=account_id)
            if credits:
                mint(
                    session,
                    account_id=account_id,
                    amount_credits=credits,
                    rail="grant",
                    external_ref=f"seed:{name}",
                    funding_account_id=SystemAccount.PROMOTIONS,
                )
        return Customer(account_id, {"Authorization": f"Bearer {issued.key}"})

    def key(self, role: str) -> dict[str, str]:
        with unit_of_work(self.engine) as session:
            issued = issue_key(session, role=role, account_id=None)
        return {"Authorization": f"Bearer {issued.key}"}

    # --- buying -----------------------------------------------------------------------------------------------

    def buy(self, customer: Customer, key: str = "k1", **body: Any) -> Response:
        payload = body if "pack" in body or "amount_credits" in body else {"pack": "standard", **body}
        response: Response = self.client.post(
            "/v1/card/purchases",
            json=payload,
            headers={**customer.headers, "Idempotency-Key": key},
        )
        return response

    def bought(self, customer: Customer, key: str = "k1", **body: Any) -> dict[str, Any]:
        response = self.buy(customer, key, **body)
        assert response.status_code in (200, 201), response.text
        data: dict[str, Any] = response.json()
        return data

    # --- webhooks ---------------------------------------------------------------------------------------------

    def deliver(
        self,
        event: dict[str, Any],
        *,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        header: str | None = None,
    ) -> Response:
        payload = to_json(event)
        signature = header if header is not None else sign(payload, secret, timestamp or int(time.time()))
        response: Response = self.client.post(
            "/v1/stripe/webhook",
            content=payload.encode(),
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        self.settle()
        return response

    def settle(self) -> None:
        """Wait until the API has processed every event it acknowledged (its processor's queue is empty)."""
        processor = getattr(self.client.app.state, "card_processor", None)  # type: ignore[attr-defined]
        if isinstance(processor, InlineProcessor):
            processor.wait_idle()

    def deliver_ok(self, event: dict[str, Any]) -> dict[str, Any]:
        response = self.deliver(event)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def complete(self, purchase: dict[str, Any], **pay: Any) -> dict[str, Any]:
        """The customer pays and Stripe sends ``checkout.session.completed``; returns the session."""
        session = self.stripe.pay(purchase["checkout_session_id"], **pay)
        self.deliver_ok(self.stripe.event("checkout.session.completed", session))
        return session

    # --- looking ----------------------------------------------------------------------------------------------

    def purchase(self, purchase_id: int) -> Any:
        with unit_of_work(self.engine) as session:
            return repo.get_purchase(session, purchase_id)

    def available(self, account_id: int) -> int:
        with unit_of_work(self.engine) as session:
            return get_balance(session, account_id).available_credits

    def balance(self, account_id: int) -> Any:
        with unit_of_work(self.engine) as session:
            return get_balance(session, account_id)

    def inbox_event(self, event_id: str) -> Any:
        with unit_of_work(self.engine) as session:
            return repo.event_by_stripe_id(session, event_id)

    def exceptions(self, kind: str | None = None) -> list[ExceptionOut]:
        with unit_of_work(self.engine) as session:
            return list_exceptions(session, rail="card", kind=kind)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())

    def card_lots(self, account_id: int) -> list[Any]:
        lots = metadata.tables["lots"]
        with self.engine.connect() as conn:
            return list(conn.execute(select(lots).where(lots.c.account_id == account_id, lots.c.rail == "card")))

    def snapshot(self) -> dict[str, int]:
        """Row counts of every table and the sum of every amount column: a refused request changes none."""
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for table in metadata.sorted_tables:
                out[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
                for column in table.columns:
                    if column.name.endswith(("_credits", "_cents")):
                        total = conn.execute(select(func.coalesce(func.sum(column), 0))).scalar_one()
                        out[f"{table.name}.{column.name}"] = int(total)
        return out


def make_card(engine: Engine, **overrides: Any) -> Iterator[Card]:
    settings = card_settings(engine, **overrides)
    fake = FakeStripe()
    gateway = StripeGateway(build_stripe_client(settings, http_client=fake), settings)
    app = create_app(settings, engine=engine)
    app.state.stripe_gateway = gateway
    with unit_of_work(engine) as session:
        admin = issue_key(session, role="admin", account_id=None, name="root")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Card(client, engine, settings, fake, gateway, {"Authorization": f"Bearer {admin.key}"})
    processor = getattr(app.state, "card_processor", None)
    if isinstance(processor, InlineProcessor):
        processor.close()
    writer = getattr(app.state, "card_inbox_writer", None)
    if isinstance(writer, InboxWriter):
        writer.close()


@pytest.fixture
def card(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine)


@pytest.fixture
def card_deferred(engine: Engine) -> Iterator[Card]:
    """Webhooks stored but not processed in the API: the worker's inbox job does it."""
    yield from make_card(engine, card_process_webhooks_inline=False)
