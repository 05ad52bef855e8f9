"""The outbox's table.

``outbox_messages``: one row per message to send, written in the same database transaction as the change it
reports (a mint, a clawback), so a message exists exactly when its change does. ``dedupe_key`` is unique (a
receipt is ``receipt:lot:<lot id>``): whatever is retried, one change gets one message. ``message_id`` is the
RFC 5322 Message-ID, decided when the row is written and used for every attempt, so a resend after a crash is
recognisable as the same message. A receipt's subject and bodies are empty until the worker first claims it and
renders it (services.outbox.service.render_receipts); every other message is written rendered. The worker claims
due rows (``status`` pending, ``next_attempt_at`` passed) by moving ``next_attempt_at`` ahead (a lease), sends with
no transaction open, then records the result.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Text
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class Channel(StrEnum):
    EMAIL = "email"


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class MessageKind(StrEnum):
    RECEIPT = "receipt"
    CLAWBACK_NOTICE = "clawback_notice"
    REINSTATEMENT_NOTICE = "reinstatement_notice"
    ALERT_LOW_BALANCE = "alert_low_balance"
    ALERT_CREDITS_EXPIRING = "alert_credits_expiring"
    ALERT_BUDGET_THRESHOLD = "alert_budget_threshold"
    ALERT_AUTO_RECHARGE_FAILED = "alert_auto_recharge_failed"


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox_messages"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    channel: str = Field(max_length=16)
    kind: str = Field(max_length=32)
    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False, index=True))
    # The lot a receipt or notice is about (receipts are numbered after it).
    lot_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    recipient: str = Field(max_length=320)
    subject: str = Field(max_length=300)
    body_text: str = Field(sa_type=Text)
    body_html: str = Field(sa_type=Text)
    message_id: str = Field(max_length=255, unique=True)
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_outbox_messages_status_next_attempt_at", "status", "next_attempt_at"),)
