"""The webhooks' test harness: real HTTP receivers on free ports, settings for the delivery job, endpoints
registered as the admin API registers them, and events recorded as the rails record them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.events import repository as repo
from services.events.models import EventType
from services.events.service import create_endpoint, record_event
from services.events.tasks import deliver
from services.ledger.accounts import create_customer_account
from tests.events.receiver import Receiver


def hook_settings(engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": str(engine.url),
        "webhook_timeout_seconds": 5.0,
        "webhook_concurrency": 4,
        "webhook_max_in_flight_per_endpoint": 2,
    }
    return Settings(**(values | overrides))


@dataclass
class Endpoint:
    id: int
    public_id: str
    secret: str


@dataclass
class Hooks:
    engine: Engine
    settings: Settings

    def endpoint(self, url: str, event_types: list[str] | None = None) -> Endpoint:
        with unit_of_work(self.engine) as session:
            row, secret = create_endpoint(
                session, self.settings, url=url, event_types=event_types or ["*"], description=None, now=utcnow()
            )
        return Endpoint(int(row.id), row.public_id, secret)

    def account(self, name: str = "buyer") -> int:
        with unit_of_work(self.engine) as session:
            return create_customer_account(session, name=name)

    def event(self, account_id: int, key: str, data: dict[str, Any] | None = None) -> Any:
        with unit_of_work(self.engine) as session:
            record_event(
                session,
                event_type=EventType.PURCHASE_COMPLETED,
                account_id=account_id,
                data=data if data is not None else {"lot_id": 7, "amount_credits": 1_000},
                dedupe_key=key,
                now=utcnow(),
            )
            return repo.event_by_key(session, key)

    def deliver(self, now: datetime | None = None, settings: Settings | None = None) -> int:
        used = settings or self.settings
        return deliver(self.engine, used, now or utcnow(), used.webhook_batch_size)

    def deliveries(self) -> list[Any]:
        with unit_of_work(self.engine) as session:
            return list(session.execute(select(repo.deliveries).order_by(repo.deliveries.c.id)).all())

    def delivery_to(self, endpoint: Endpoint) -> Any:
        [row] = [row for row in self.deliveries() if row.endpoint_id == endpoint.id]
        return row

    def attempts(self, delivery_id: int) -> list[Any]:
        with unit_of_work(self.engine) as session:
            return repo.attempts_of(session, [delivery_id])[delivery_id]


@pytest.fixture
def hooks(engine: Engine) -> Hooks:
    return Hooks(engine, hook_settings(engine))


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    started: list[Receiver] = []

    def make() -> Receiver:
        receiver = Receiver().start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


@pytest.fixture
def receiver(make_receiver: Callable[[], Receiver]) -> Receiver:
    return make_receiver()
