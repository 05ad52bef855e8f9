"""The alerts' tables.

- ``alert_settings``: one row per account that changed its alert settings (none: no low-balance threshold, emails
  on). ``low_balance_threshold_credits`` null turns the low-balance alert off.
- ``alert_states``: the edge-triggered state of each alert, one row per (account, kind, subject), unique, so that
  whatever is retried or run twice at once, a crossing fires once: the evaluation fires by moving a row from armed
  to fired in one conditional write (an insert that conflicts, or an update guarded by the old state), and only the
  writer that changed the row sends. ``crossings`` counts the times it fired; the messages' dedupe keys carry it.

  Subjects: the account itself for the low balance (``""``); ``budget:<id>:<period start>`` for a budget in one
  period (``level_percent``: the highest threshold fired in that period, a new period being a new row, armed);
  ``lot:<id>`` for an expiring lot (fires once, never re-armed); ``purchase:<id>`` for a failed auto-recharge
  attempt (fires once: each failed attempt is its own crossing).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class AlertKind(StrEnum):
    LOW_BALANCE = "low_balance"
    CREDITS_EXPIRING = "credits_expiring"
    BUDGET_THRESHOLD = "budget_threshold"
    AUTO_RECHARGE_FAILED = "auto_recharge_failed"


class AlertSettings(SQLModel, table=True):
    __tablename__ = "alert_settings"

    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), primary_key=True))
    low_balance_threshold_credits: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    email_enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint(
            "low_balance_threshold_credits IS NULL OR low_balance_threshold_credits > 0",
            name="ck_alert_settings_threshold_positive",
        ),
    )


class AlertState(SQLModel, table=True):
    __tablename__ = "alert_states"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False))
    kind: str = Field(max_length=32)
    subject_key: str = Field(max_length=100)
    # The budget, lot or purchase the subject names (None for the account itself), and a budget's period.
    ref_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    period_start: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    armed: bool = Field(sa_column=Column(Boolean, nullable=False))
    level_percent: int = Field(default=0)
    crossings: int = Field(default=0)
    fired_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    rearmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("account_id", "kind", "subject_key", name="uq_alert_states_subject"),
        # The evaluation's look-ups: a lot already reported, a budget's state in a period.
        Index("ix_alert_states_kind_ref", "kind", "ref_id"),
    )
