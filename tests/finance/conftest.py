"""Finance's test harness: the API on the test's database (SQLite and PostgreSQL) with an offline Stripe, as the
card rail's tests have it, plus a finance key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from tests.card.conftest import Card, make_card


@pytest.fixture
def card(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine)
