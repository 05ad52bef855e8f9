"""The events' row shapes: what ``repository``'s reads return (see ``services.core.rows``): SQLAlchemy's rows as they
come, typed by a Protocol per shape. A shape of a join names the tables it reads and, in double backquotes, the
labels it gives columns of the same name."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from services.core.rows import RowShape


class EventRow(RowShape, Protocol):
    """A row of ``events``."""

    id: int
    public_id: str
    dedupe_key: str
    type: str
    account_id: int
    data: dict[str, Any]
    created_at: datetime


class EndpointRow(RowShape, Protocol):
    """A row of ``webhook_endpoints``."""

    id: int
    public_id: str
    url: str
    secret: str
    event_types: list[str]
    description: str | None
    enabled: bool
    created_at: datetime


class DeliveryRow(RowShape, Protocol):
    """A row of ``webhook_deliveries``."""

    id: int
    event_id: int
    endpoint_id: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AttemptRow(RowShape, Protocol):
    """A row of ``webhook_attempts``."""

    id: int
    delivery_id: int
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None


class EndpointTypes(RowShape, Protocol):
    """An enabled endpoint and what it wants: some columns of ``webhook_endpoints``."""

    id: int
    event_types: list[str]


class DeliveryListed(DeliveryRow, Protocol):
    """A delivery as the admin API lists it: a row of ``webhook_deliveries`` with its event's ``event_public_id``
    and ``event_type`` (of ``events``) and its endpoint's ``endpoint_public_id`` (of ``webhook_endpoints``)."""

    event_public_id: str
    event_type: str
    endpoint_public_id: str


class ClaimedDelivery(RowShape, Protocol):
    """A delivery claimed for sending, with what sending it needs: some columns of ``webhook_deliveries``, its
    endpoint's (``webhook_endpoints``) and its event's (``events``: ``event_public_id``, ``event_type``,
    ``event_created_at``)."""

    id: int
    attempts: int
    endpoint_id: int
    url: str
    secret: str
    event_public_id: str
    event_type: str
    account_id: int
    data: dict[str, Any]
    event_created_at: datetime
