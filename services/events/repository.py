"""The events' queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from services.events.models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint
from services.ledger.repository import table_of

events: Table = table_of(Event)
endpoints: Table = table_of(WebhookEndpoint)
deliveries: Table = table_of(WebhookDelivery)


def insert_event(session: Session, values: dict[str, Any]) -> int | None:
    """Insert an event unless one with its dedupe key exists; its id when it was inserted now, else None."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(events).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(events.c.id)
    return session.execute(stmt).scalar_one_or_none()


def enabled_endpoints(session: Session) -> list[Any]:
    """Every enabled endpoint with the event types it wants (a handful of rows, read once per event)."""
    stmt = select(endpoints.c.id, endpoints.c.event_types).where(endpoints.c.enabled.is_(True))
    return list(session.execute(stmt).all())


def insert_deliveries(session: Session, event_id: int, endpoint_ids: Sequence[int], now: datetime) -> None:
    if not endpoint_ids:
        return
    session.execute(
        deliveries.insert(),
        [
            {
                "event_id": event_id,
                "endpoint_id": endpoint_id,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint_id in endpoint_ids
        ],
    )


def event_by_key(session: Session, dedupe_key: str) -> Any:
    return session.execute(select(events).where(events.c.dedupe_key == dedupe_key)).first()
