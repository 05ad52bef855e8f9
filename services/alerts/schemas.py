"""The alerts' API shapes: the settings a customer (or the platform, for an account) reads and changes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.api.types import MAX_BIGINT, StrictBool

Threshold = Annotated[int, Field(strict=True, ge=-MAX_BIGINT, le=MAX_BIGINT)]


class AlertSettingsIn(BaseModel):
    """Fields left out are kept. ``low_balance_threshold_credits``: 1 .. the maximum amount, or null (off)."""

    model_config = ConfigDict(extra="forbid")

    low_balance_threshold_credits: Threshold | None = None
    email_enabled: StrictBool | None = None


class AlertSettingsOut(BaseModel):
    low_balance_threshold_credits: int | None
    email_enabled: bool
    # Per kind of alert (low_balance, budget_threshold, credits_expiring, auto_recharge_failed): whether its next
    # crossing fires (false: it fired, and waits for a recovery).
    armed: dict[str, bool]
