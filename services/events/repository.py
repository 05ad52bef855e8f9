"""The events' queries. Reads return rows typed by their shapes in ``services.events.rows``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, select, update
from sqlmodel import Session

from services.core.db import insert_for, table_of
from services.events.models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from services.events.rows import (
    AttemptRow,
    ClaimedDelivery,
    DeliveryListed,
    EndpointRow,
    EndpointTypes,
    EventRow,
)

events: Table = table_of(Event)
endpoints: Table = table_of(WebhookEndpoint)
deliveries: Table = table_of(WebhookDelivery)


def insert_event(session: Session, values: dict[str, Any]) -> int | None:
    """Insert an event unless one with its dedupe key exists; its id when it was inserted now, else None."""
    stmt = (
        insert_for(session, events)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(events.c.id)
    )
    return session.execute(stmt).scalar_one_or_none()


def enabled_endpoints(session: Session) -> list[EndpointTypes]:
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


def event_by_key(session: Session, dedupe_key: str) -> EventRow | None:
    return session.execute(select(events).where(events.c.dedupe_key == dedupe_key)).first()


attempts: Table = table_of(WebhookAttempt)


# The delivery job.


def due_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Pending deliveries to enabled endpoints whose time has come, oldest first, locked (PostgreSQL: others'
    locked rows passed over)."""
    enabled = select(endpoints.c.id).where(endpoints.c.enabled.is_(True))
    stmt = (
        select(deliveries.c.id)
        .where(
            deliveries.c.status == DeliveryStatus.PENDING,
            deliveries.c.next_attempt_at <= now,
            deliveries.c.endpoint_id.in_(enabled),
        )
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [int(row) for row in session.execute(stmt).scalars()]


def claim(session: Session, ids: Sequence[int], now: datetime, lease_until: datetime) -> list[ClaimedDelivery]:
    """Lease the deliveries (still pending, still due) to this sender until ``lease_until``, counting the attempt;
    each with what sending it needs: its event and its endpoint's URL and secret, in id order."""
    if not ids:
        return []
    claimed = session.execute(
        update(deliveries)
        .where(
            deliveries.c.id.in_(ids),
            deliveries.c.status == DeliveryStatus.PENDING,
            deliveries.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=lease_until, attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.id)
    )
    claimed_ids = [int(row) for row in claimed.scalars()]
    if not claimed_ids:
        return []
    stmt = (
        select(
            deliveries.c.id,
            deliveries.c.attempts,
            deliveries.c.endpoint_id,
            endpoints.c.url,
            endpoints.c.secret,
            events.c.public_id.label("event_public_id"),
            events.c.type.label("event_type"),
            events.c.account_id,
            events.c.data,
            events.c.created_at.label("event_created_at"),
        )
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
        .join(events, events.c.id == deliveries.c.event_id)
        .where(deliveries.c.id.in_(claimed_ids))
        .order_by(deliveries.c.id)
    )
    return list(session.execute(stmt).all())


def record(session: Session, delivery_id: int, attempt: int, **values: Any) -> bool:
    """Record an attempt's result, only if no later attempt took the delivery over meanwhile."""
    result = session.execute(
        update(deliveries)
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.attempts == attempt,
            deliveries.c.status == DeliveryStatus.PENDING,
        )
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def insert_attempt(session: Session, values: dict[str, Any]) -> None:
    session.execute(attempts.insert().values(**values))


# Endpoints.


def insert_endpoint(session: Session, values: dict[str, Any]) -> int:
    return int(session.execute(endpoints.insert().values(**values).returning(endpoints.c.id)).scalar_one())


def endpoint_by_public_id(session: Session, public_id: str) -> EndpointRow | None:
    return session.execute(select(endpoints).where(endpoints.c.public_id == public_id)).first()


def update_endpoint(session: Session, endpoint_id: int, **values: Any) -> None:
    session.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(**values))


def list_endpoints(session: Session, *, after_id: int, limit: int) -> list[EndpointRow]:
    stmt = select(endpoints).where(endpoints.c.id > after_id).order_by(endpoints.c.id).limit(limit)
    return list(session.execute(stmt).all())


# Deliveries and their log.

_delivery_columns = (
    *deliveries.c,
    events.c.public_id.label("event_public_id"),
    events.c.type.label("event_type"),
    endpoints.c.public_id.label("endpoint_public_id"),
)


def _deliveries_joined() -> Select[Any]:
    return (
        select(*_delivery_columns)
        .join(events, events.c.id == deliveries.c.event_id)
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
    )


def get_delivery(session: Session, delivery_id: int) -> DeliveryListed | None:
    return session.execute(_deliveries_joined().where(deliveries.c.id == delivery_id)).first()


def list_deliveries(session: Session, endpoint_id: int, *, before_id: int | None, limit: int) -> list[DeliveryListed]:
    """An endpoint's deliveries, newest first."""
    stmt = _deliveries_joined().where(deliveries.c.endpoint_id == endpoint_id)
    if before_id is not None:
        stmt = stmt.where(deliveries.c.id < before_id)
    return list(session.execute(stmt.order_by(deliveries.c.id.desc()).limit(limit)).all())


def attempts_of(session: Session, delivery_ids: Sequence[int]) -> dict[int, list[AttemptRow]]:
    """Each delivery's attempts, oldest first."""
    found: dict[int, list[AttemptRow]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return found
    stmt = select(attempts).where(attempts.c.delivery_id.in_(delivery_ids)).order_by(attempts.c.id)
    for row in session.execute(stmt):
        found[int(row.delivery_id)].append(row)
    return found


def requeue(session: Session, delivery_id: int, now: datetime) -> None:
    """Make a delivery due now, whatever its status (a resend)."""
    session.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id)
        .values(status=DeliveryStatus.PENDING, next_attempt_at=now, delivered_at=None)
    )


# Events.


def event_by_public_id(session: Session, public_id: str) -> EventRow | None:
    return session.execute(select(events).where(events.c.public_id == public_id)).first()


def list_events(
    session: Session, *, account_id: int | None, event_type: str | None, before_id: int | None, limit: int
) -> list[EventRow]:
    """Events, newest first, of one account and of one type when asked."""
    stmt = select(events)
    if account_id is not None:
        stmt = stmt.where(events.c.account_id == account_id)
    if event_type is not None:
        stmt = stmt.where(events.c.type == event_type)
    if before_id is not None:
        stmt = stmt.where(events.c.id < before_id)
    return list(session.execute(stmt.order_by(events.c.id.desc()).limit(limit)).all())
