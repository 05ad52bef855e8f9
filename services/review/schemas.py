"""The review queue's shape: one entry, as the queue's service returns it and finance's API serves it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ExceptionOut(BaseModel):
    id: int
    rail: str
    kind: str
    reference: str
    account_id: int | None
    amount_cents: int | None
    amount_usdc_units: int | None
    amount_credits: int | None
    details: dict[str, Any]
    status: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    action: str | None
    transaction_id: int | None
