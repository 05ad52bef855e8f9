"""The outbox's test harness: a real SMTP server on a free port, settings pointing at it, and an account with an
email that has a card lot and its receipt written (as fulfilment writes it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.card.repository import card_labels_of_purchases
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account, update_email
from services.ledger.minting import mint
from services.ledger.models import Rail
from services.ledger.system_accounts import SystemAccount
from services.outbox import repository as repo
from services.outbox.mailer import SmtpMailer
from services.outbox.service import record_receipt
from services.outbox.tasks import deliver
from tests.outbox.smtp_server import TestSmtpServer


def mail_settings(engine: Engine, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": str(engine.url),
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_timeout_seconds": 10.0,
        "mail_from": "Credits <receipts@creditrail.test>",
        "support_email": "help@creditrail.test",
        "outbox_backoff_initial_seconds": 60.0,
        "outbox_max_attempts": 3,
        "outbox_lease_seconds": 300.0,
    }
    return Settings(**(values | overrides))


@dataclass
class Mail:
    engine: Engine
    settings: Settings
    smtp: TestSmtpServer

    def account(self, email: str | None = "buyer@example.test", name: str = "buyer") -> int:
        with unit_of_work(self.engine) as session:
            account_id = create_customer_account(session, name=name)
            if email is not None:
                update_email(session, account_id, email=email, verified=True)
        return account_id

    def purchase(self, account_id: int, ref: str = "cs_test_1", credits: int = 1_000) -> int:
        """A card lot and its receipt, written in one transaction; returns the lot id."""
        with unit_of_work(self.engine) as session:
            minted = mint(
                session,
                account_id=account_id,
                amount_credits=credits,
                rail=Rail.CARD,
                external_ref=ref,
                funding_account_id=SystemAccount.FUNDING_CARD,
                cost_basis_cents=credits,
                details={"pack": "standard"},
            )
            record_receipt(session, account_id=account_id, lot_id=minted.lot_id, now=utcnow(), settings=self.settings)
        return minted.lot_id

    def deliver(self, now: datetime | None = None, settings: Settings | None = None) -> int:
        used = settings or self.settings
        return deliver(
            self.engine,
            used,
            SmtpMailer(used),
            now or utcnow(),
            used.outbox_batch_size,
            cards_of_purchases=card_labels_of_purchases,
        )

    def messages(self) -> list[Any]:
        with unit_of_work(self.engine) as session:
            return list(session.execute(select(repo.messages).order_by(repo.messages.c.id)).all())


@pytest.fixture
def smtp() -> Iterator[TestSmtpServer]:
    server = TestSmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def mail(engine: Engine, smtp: TestSmtpServer) -> Mail:
    return Mail(engine, mail_settings(engine, smtp.port), smtp)
