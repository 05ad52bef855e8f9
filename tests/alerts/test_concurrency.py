"""Two evaluations at once (two workers, no job lock between them) against PostgreSQL: every crossing is sent once,
because only the evaluation whose conditional write moved a state from armed to fired sends it."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from tests.alerts.conftest import Alerts, make_alerts
from tests.outbox.smtp_server import TestSmtpServer

ACCOUNTS = 12
ROUNDS = 4


@pytest.mark.postgresql_only
def test_two_concurrent_evaluations_send_each_crossing_once(pg_engine: Engine, smtp: TestSmtpServer) -> None:
    # Pages of 5: the two evaluations interleave page by page over the same candidates.
    harness = make_alerts(pg_engine, smtp, alerts_batch_size=5)
    alerts = next(harness)
    try:
        _race(alerts)
    finally:
        harness.close()


def _race(alerts: Alerts) -> None:
    now = utcnow()
    customers = [alerts.customer(f"c{n}", credits=1_000) for n in range(ACCOUNTS)]
    for customer in customers:
        # A first crossing and its recovery before the race: the racing crossing fires an existing, armed state.
        alerts.configure(customer, low_balance_threshold_credits=1_100)
    alerts.evaluate(now)
    for customer in customers:
        alerts.configure(customer, low_balance_threshold_credits=900)
    alerts.evaluate(now)
    for n, customer in enumerate(customers):
        body = {"name": "b", "scope": "project", "scope_ref": "p", "period": "month", "limit_credits": 200}
        assert alerts.client.post("/v1/budgets", json=body, headers=customer.headers).status_code == 201
        alerts.spend(customer, 170, f"s{n}", project="p")  # 830 left, 85 % of the budget
        alerts.grant(customer, 10, f"e{n}", expires_at=now + timedelta(days=3))

    errors: list[BaseException] = []
    for _ in range(ROUNDS):
        barrier = threading.Barrier(2)

        def run(barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=10)
                alerts.evaluate(now)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    by_type = Counter((event.type, event.account_id) for event in alerts.events())
    for customer in customers:
        assert by_type[("credits.low", customer.account_id)] == 2
        for event_type in ("budget.threshold", "credits.expiring"):
            assert by_type[(event_type, customer.account_id)] == 1, (event_type, customer.account_id)
    assert len(alerts.emails()) == 4 * ACCOUNTS
