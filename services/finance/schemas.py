"""Finance's HTTP shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.api.pages import Page
from services.api.types import MAX_BIGINT, Instant, Text
from services.review.schemas import ExceptionOut

ExceptionPage = Page[ExceptionOut]


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["mint", "clawback", "ignore", "note"]
    reason: Annotated[Text, Field(min_length=1, max_length=2000)]
    # For a mint: the account to credit, when the exception does not know it (or knows it wrongly).
    account_id: int | None = Field(default=None, gt=0, le=MAX_BIGINT)
    # For a mint or a clawback: the credits, when not those the exception computed.
    amount_credits: int | None = Field(default=None, gt=0, le=MAX_BIGINT)


class ReconcileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "card", "usdc" (every chain), "usdc:<chain id>" or "all".
    rail: Annotated[Text, Field(min_length=1, max_length=32)]
    period_start: Instant
    period_end: Instant


class RunOut(BaseModel):
    id: int
    rail: str
    period_start: datetime
    period_end: datetime
    status: str
    attempts: int
    external_records: int
    ledger_records: int
    matched: int
    missing_in_ledger: int
    missing_externally: int
    amount_mismatch: int
    late: int
    last_error: str | None
    started_at: datetime
    finished_at: datetime | None

    @property
    def discrepancies(self) -> int:
        return self.missing_in_ledger + self.missing_externally + self.amount_mismatch


class ItemOut(BaseModel):
    id: int
    kind: str
    category: str
    late: bool
    external_ref: str | None
    lot_ref: str | None
    lot_id: int | None
    account_id: int | None
    external_amount_cents: int | None
    external_amount_usdc_units: int | None
    expected_credits: int | None
    ledger_credits: int | None
    external_at: datetime | None
    ledger_at: datetime | None
    note: str | None


RunPage = Page[RunOut]


class ItemPage(Page[ItemOut]):
    # The run the items belong to.
    run: RunOut
