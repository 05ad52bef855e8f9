"""A harness for the Stripe pull: the test's database, an offline Stripe (the real SDK over :class:`FakeStripe`) with
its clock pinned, and ways to look at the mirror, the pulls and what was asked of Stripe."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from services.card.stripe_client import StripeGateway, build_stripe_client
from services.core.db import unit_of_work
from services.finance.flows.stripe_pull import (
    BALANCE_TRANSACTIONS_SOURCE,
    CHECKOUT_SESSIONS_SOURCE,
    StripePullResult,
    balance_transactions_table,
    checkout_sessions_table,
    pull_stripe,
)
from services.finance.pulls import PullState, get_pull
from tests.card.conftest import card_settings
from tests.card.stripe_fake import FakeStripe, Recorded

# A day of card payments to reconcile, and moments around it.
WINDOW_START = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 3, 2, tzinfo=UTC)
DURING = WINDOW_START + timedelta(hours=10)
AFTER = WINDOW_END + timedelta(hours=1)

BALANCE_TRANSACTIONS_PATH = "/v1/balance_transactions"
SESSIONS_PATH = "/v1/checkout/sessions"


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


class TransactionWatch:
    """Counts the database transactions open on an engine, so a test can assert none is open during a call."""

    def __init__(self, engine: Engine) -> None:
        self.open = 0
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        self.engine = engine

    def _begin(self, _connection: Any) -> None:
        self.open += 1

    def _end(self, _connection: Any) -> None:
        self.open = max(0, self.open - 1)

    def close(self) -> None:
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "commit", self._end)
        event.remove(self.engine, "rollback", self._end)


@dataclass
class StripeMirror:
    engine: Engine
    stripe: FakeStripe
    gateway: StripeGateway

    def pull(self, *, now: datetime = AFTER, **kwargs: Any) -> StripePullResult:
        window = {"window_start": WINDOW_START, "window_end": WINDOW_END} | kwargs
        return pull_stripe(self.engine, self.gateway, now=now, **window)

    # --- what was asked ----------------------------------------------------------------------------------------

    def listed(self, path: str) -> list[Recorded]:
        """The list requests sent to ``path`` (not retrievals of one object under it)."""
        return [r for r in self.stripe.requests if r.method == "GET" and r.path == path]

    # --- what was stored ---------------------------------------------------------------------------------------

    def transactions(self) -> list[Any]:
        t = balance_transactions_table
        with self.engine.connect() as conn:
            return list(conn.execute(select(t).order_by(t.c.stripe_created_at, t.c.stripe_id)))

    def transaction(self, stripe_id: str) -> Any:
        [row] = [row for row in self.transactions() if row.stripe_id == stripe_id]
        return row

    def sessions(self) -> list[Any]:
        t = checkout_sessions_table
        with self.engine.connect() as conn:
            return list(conn.execute(select(t).order_by(t.c.stripe_created_at, t.c.stripe_id)))

    def distinct_transactions(self) -> int:
        t = balance_transactions_table
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count(func.distinct(t.c.stripe_id)))).scalar_one())

    def pull_state(
        self, source: str = BALANCE_TRANSACTIONS_SOURCE, start: datetime = WINDOW_START, end: datetime = WINDOW_END
    ) -> PullState | None:
        with unit_of_work(self.engine) as session:
            return get_pull(session, source, start, end)

    def sessions_pull(self) -> PullState | None:
        return self.pull_state(CHECKOUT_SESSIONS_SOURCE)


def stripe_mirror(engine: Engine) -> Iterator[StripeMirror]:
    """The harness on ``engine``; the fake's clock starts during the window."""
    settings = card_settings(engine)
    fake = FakeStripe()
    fake.now = unix(DURING)
    yield StripeMirror(engine, fake, StripeGateway(build_stripe_client(settings, http_client=fake), settings))
