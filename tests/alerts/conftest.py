"""The alerts' test harness: an app on the test's database (SQLite and PostgreSQL) with settings pointing at a real
SMTP server, customers with keys, and helpers to spend, grant, evaluate, deliver and read what was recorded."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.alerts.tasks import evaluate
from services.apikeys.service import issue_key
from services.app.app import create_app
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.events.repository import events
from services.ledger.accounts import create_customer_account, update_email
from services.ledger.balance import get_balance
from services.ledger.minting import grant
from services.ledger.spending import spend
from services.outbox import repository as outbox_repo
from services.outbox.mailer import SmtpMailer
from services.outbox.tasks import deliver
from tests.card.conftest import card  # noqa: F401 - the card rail's harness, for failed auto-recharges
from tests.outbox.conftest import mail_settings, smtp  # noqa: F401 - the real SMTP server
from tests.outbox.smtp_server import TestSmtpServer


@dataclass
class Customer:
    account_id: int
    headers: dict[str, str]


@dataclass
class Alerts:
    client: TestClient
    engine: Engine
    settings: Settings
    smtp: TestSmtpServer
    admin: dict[str, str]

    def customer(self, name: str = "acme", email: str | None = "owner@example.test", credits: int = 0) -> Customer:
        with unit_of_work(self.engine) as session:
            account_id = create_customer_account(session, name=name)
            if email is not None:
                update_email(session, account_id, email=email, verified=True)
            issued = issue_key(session, role="customer", account_id=account_id)
        customer = Customer(account_id, {"Authorization": f"Bearer {issued.key}"})
        if credits:
            self.grant(customer, credits, f"seed:{name}")
        return customer

    def configure(self, customer: Customer, **body: Any) -> dict[str, Any]:
        response = self.client.patch("/v1/account/alerts", json=body, headers=customer.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def alerts(self, customer: Customer) -> dict[str, Any]:
        response = self.client.get("/v1/account/alerts", headers=customer.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def spend(
        self, customer: Customer, credits: int, key: str, project: str | None = None, now: datetime | None = None
    ) -> None:
        with unit_of_work(self.engine) as session:
            spend(
                session,
                account_id=customer.account_id,
                amount_credits=credits,
                idempotency_key=key,
                project=project,
                now=now,
            )

    def grant(self, customer: Customer, credits: int, key: str, expires_at: datetime | None = None) -> int:
        with unit_of_work(self.engine) as session:
            return grant(
                session,
                account_id=customer.account_id,
                amount_credits=credits,
                idempotency_key=key,
                expires_at=expires_at,
            ).lot_id

    def available(self, customer: Customer) -> int:
        with unit_of_work(self.engine) as session:
            return get_balance(session, customer.account_id).available_credits

    def evaluate(self, now: datetime | None = None) -> int:
        return evaluate(self.engine, self.settings, now or utcnow(), self.settings.alerts_batch_size)

    def deliver(self, now: datetime | None = None) -> int:
        mailer = SmtpMailer(self.settings)
        return deliver(self.engine, self.settings, mailer, now or utcnow(), self.settings.outbox_batch_size)

    def events(self, event_type: str | None = None, account_id: int | None = None) -> list[Any]:
        stmt = select(events).order_by(events.c.id)
        if event_type is not None:
            stmt = stmt.where(events.c.type == event_type)
        if account_id is not None:
            stmt = stmt.where(events.c.account_id == account_id)
        with unit_of_work(self.engine) as session:
            return list(session.execute(stmt).all())

    def emails(self, kind: str | None = None, account_id: int | None = None) -> list[Any]:
        table = outbox_repo.messages
        stmt = select(table).order_by(table.c.id)
        if kind is not None:
            stmt = stmt.where(table.c.kind == kind)
        if account_id is not None:
            stmt = stmt.where(table.c.account_id == account_id)
        with unit_of_work(self.engine) as session:
            return list(session.execute(stmt).all())


def make_alerts(engine: Engine, smtp_server: TestSmtpServer, **overrides: Any) -> Generator[Alerts, None, None]:
    # One sending lane: the server receives the alerts in the order they were written, which the tests read.
    settings = mail_settings(engine, smtp_server.port, **({"outbox_concurrency": 1} | overrides))
    app = create_app(settings, engine=engine)
    with unit_of_work(engine) as session:
        admin = issue_key(session, role="admin", account_id=None, name="root")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Alerts(client, engine, settings, smtp_server, {"Authorization": f"Bearer {admin.key}"})


@pytest.fixture
def alerts(engine: Engine, smtp: TestSmtpServer) -> Iterator[Alerts]:  # noqa: F811 - the fixture imported above
    yield from make_alerts(engine, smtp)
