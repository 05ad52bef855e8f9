"""The alerts' row shapes: what ``repository``'s reads return (see ``services.core.rows``): SQLAlchemy's rows as they
come, typed by a Protocol per shape. A shape of a join names the tables it reads and, in double backquotes, the
labels it gives its computed columns."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.core.rows import RowShape


class SettingsRow(RowShape, Protocol):
    """A row of ``alert_settings``."""

    account_id: int
    low_balance_threshold_credits: int | None
    email_enabled: bool
    created_at: datetime
    updated_at: datetime


class StateRow(RowShape, Protocol):
    """A row of ``alert_states``."""

    id: int
    account_id: int
    kind: str
    subject_key: str
    ref_id: int | None
    period_start: datetime | None
    armed: bool
    level_percent: int
    crossings: int
    fired_at: datetime | None
    rearmed_at: datetime | None
    updated_at: datetime


class LowBalanceCandidate(RowShape, Protocol):
    """An account whose low-balance state may have to change: its ``alert_settings`` row's account, its
    ``threshold_credits`` and its state's id, ``state_id`` (None before the first alert)."""

    account_id: int
    threshold_credits: int
    state_id: int | None


class BudgetCandidate(RowShape, Protocol):
    """A budget whose threshold state may have to change: some columns of ``budgets``, the period's
    ``used_credits``, its state's ``state_id`` (None before the period's first alert) and ``level_percent``."""

    id: int
    account_id: int
    name: str
    period: str
    limit_credits: int
    used_credits: int
    state_id: int | None
    level_percent: int


class ExpiringLot(RowShape, Protocol):
    """A lot with credits about to expire: some columns of ``lots``."""

    id: int
    remaining_credits: int
    reserved_credits: int
    expires_at: datetime
