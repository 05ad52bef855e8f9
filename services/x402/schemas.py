"""The x402 purchase's API shapes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.api.types import MAX_BIGINT


class X402PurchaseIn(BaseModel):
    """What to buy, and for whom: ``wallet_address`` pays and, unless a beneficiary is named (a wallet, or an
    account id), receives the credits."""

    model_config = ConfigDict(extra="forbid")

    credits: int = Field(gt=0, le=MAX_BIGINT)
    wallet_address: str = Field(min_length=1, max_length=100)
    beneficiary_wallet: str | None = Field(default=None, min_length=1, max_length=100)
    beneficiary_account_id: int | None = Field(default=None, gt=0, le=MAX_BIGINT)
