"""The events' tables.

- ``events``: one row per thing that happened to an account, written in the same database transaction as the change
  it reports (a mint, a clawback, an alert's crossing), so an event exists exactly when its change does.
  ``dedupe_key`` is unique (``purchase.completed:lot:<lot id>``): whatever is retried, one change gets one event.
  ``public_id`` (``evt_...``) is what the platform sees; ``data`` is the event's object, fixed when it is written.
- ``webhook_endpoints``: the platform's receivers, registered through the admin API, each with its signing secret
  and the event types it wants (``["*"]``: all).
- ``webhook_deliveries``: the outbox of the webhook channel, one row per (event, endpoint) written with the event
  (unique on the pair), claimed and sent by the worker as the mail outbox is.
- ``webhook_attempts``: the delivery log, one row per HTTP attempt of a delivery (when, the answer's status, how
  long it took, the error, the start of the answer's body); appended to, never changed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, ForeignKey, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class EventType(StrEnum):
    PURCHASE_COMPLETED = "purchase.completed"
    DEPOSIT_CREDITED = "deposit.credited"
    CREDITS_LOW = "credits.low"
    CREDITS_EXPIRING = "credits.expiring"
    AUTO_RECHARGE_FAILED = "auto_recharge.failed"
    BUDGET_THRESHOLD = "budget.threshold"
    REFUND_CLAWED_BACK = "refund.clawed_back"
    DISPUTE_REINSTATED = "dispute.reinstated"
    DEPOSIT_REVERSED = "deposit.reversed"


ALL_EVENT_TYPES = "*"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Event(SQLModel, table=True):
    __tablename__ = "events"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    public_id: str = Field(max_length=40, unique=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    type: str = Field(max_length=64)
    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False, index=True))
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    public_id: str = Field(max_length=40, unique=True)
    url: str = Field(max_length=2000)
    # Signs every delivery (HMAC-SHA256); kept as is because it must be used, shown once at creation.
    secret: str = Field(max_length=200)
    event_types: list[str] = Field(default_factory=list, sa_type=JSON, nullable=False)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    event_id: int = Field(sa_column=Column(BigInteger, ForeignKey("events.id"), nullable=False))
    endpoint_id: int = Field(sa_column=Column(BigInteger, ForeignKey("webhook_endpoints.id"), nullable=False))
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, sa_type=Text, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    )


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    delivery_id: int = Field(sa_column=Column(BigInteger, ForeignKey("webhook_deliveries.id"), nullable=False))
    attempted_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # The endpoint's HTTP status; None when no answer came (refused, timed out, not sent).
    status_code: int | None = Field(default=None)
    duration_ms: int = Field(default=0)
    error: str | None = Field(default=None, max_length=500)
    # The start of the answer's body, as text (for the delivery log).
    response_excerpt: str | None = Field(default=None, max_length=500)

    __table_args__ = (Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),)
