"""Customer sessions' tests use the API tests' app (an admin key, customers with credits), and a clock they move."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.apikeys import sessions
from tests.api.conftest import Api, api

__all__ = ["Api", "Clock", "api", "clock"]


@dataclass
class Clock:
    """The sessions' notion of now, moved by the test."""

    now: datetime

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(datetime(2026, 12, 7, 12, 0, tzinfo=UTC))

    def now() -> datetime:
        return clock.now

    monkeypatch.setattr(sessions, "utcnow", now)
    return clock


def session_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_session(api: Api, account_id: int, **body: Any) -> dict[str, Any]:
    response = api.client.post(
        "/v1/admin/customer-sessions", json={"account_id": account_id, **body}, headers=api.admin
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
