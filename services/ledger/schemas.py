"""The ledger's API shapes. Amounts are strict integers (no strings, no floats), bounded by 64-bit storage;
the configured maximum is enforced by the services."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.api.pages import Page
from services.api.types import MAX_BIGINT, Instant, StrictBool, Text
from services.ledger.models import ACCOUNT_SCOPE_REF, BudgetScope

MAX_STORABLE = MAX_BIGINT

PositiveCredits = Annotated[int, Field(strict=True, gt=0, le=MAX_STORABLE)]
NonNegativeCredits = Annotated[int, Field(strict=True, ge=0, le=MAX_STORABLE)]
SignedCredits = Annotated[int, Field(strict=True, ge=-MAX_STORABLE, le=MAX_STORABLE)]
Project = Annotated[Text, Field(min_length=1, max_length=100)]
Description = Annotated[Text, Field(max_length=500)]
Name = Annotated[Text, Field(min_length=1, max_length=100)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountIn(Request):
    name: Annotated[Text, Field(min_length=1, max_length=200)]


class AccountOut(BaseModel):
    id: int
    name: str
    debt_credits: int
    created_at: datetime
    email: str | None = None
    email_verified: bool = False


class AccountAdminUpdate(Request):
    """The platform sets an account's email (null removes it) and whether it is verified."""

    email: Annotated[Text, Field(max_length=320)] | None = None
    email_verified: StrictBool | None = None


class AccountUpdate(Request):
    """The customer changes its own email (which makes it unverified; null removes it)."""

    email: Annotated[Text, Field(max_length=320)] | None


class BalanceOut(BaseModel):
    account_id: int
    available_credits: int
    # What the available credits are worth in US cents (services.core.money), for showing dollars beside them.
    available_cents: int
    reserved_credits: int
    debt_credits: int
    total_credits: int
    next_expiry_at: datetime | None
    next_expiry_credits: int
    expiring_within_30_days_credits: int


class LotOut(BaseModel):
    id: int
    rail: str
    external_ref: str
    promotional: bool
    credits: int
    remaining_credits: int
    reserved_credits: int
    cost_basis_cents: int | None
    cost_basis_usdc_units: int | None
    credited_at: datetime
    expires_at: datetime


class TransactionOut(BaseModel):
    id: int
    kind: str
    amount_credits: int
    created_at: datetime
    description: str | None
    details: dict[str, Any]


class ChargeIn(Request):
    amount_credits: PositiveCredits
    project: Project | None = None
    description: Description | None = None


class Draw(BaseModel):
    lot_id: int
    amount_credits: int


class ChargeOut(BaseModel):
    transaction_id: int
    amount_credits: int
    draws: list[Draw]
    created_at: datetime
    replayed: bool


class HoldIn(Request):
    amount_credits: PositiveCredits
    ttl_seconds: Annotated[int, Field(strict=True, gt=0, le=MAX_STORABLE)] | None = None
    project: Project | None = None
    description: Description | None = None


class CaptureIn(Request):
    amount_credits: PositiveCredits


class HoldOut(BaseModel):
    id: int
    amount_credits: int
    captured_credits: int
    status: str
    project: str | None
    description: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    capture_transaction_id: int | None
    replayed: bool = False


class BudgetIn(Request):
    name: Name
    scope: Annotated[str, Field(pattern="^(api_key|project|account)$")]
    # The API key's id (decimal) for scope "api_key"; the project's name for scope "project"; for scope "account"
    # (every charge and hold of the account) nothing, or "*".
    scope_ref: Annotated[Text, Field(min_length=1, max_length=100)] | None = None
    period: Annotated[str, Field(pattern="^(day|week|month|total)$")]
    limit_credits: NonNegativeCredits

    @model_validator(mode="after")
    def _scope_ref_fits_the_scope(self) -> BudgetIn:
        ref = self.scope_ref
        if self.scope == BudgetScope.ACCOUNT:
            if ref is None:
                self.scope_ref = ACCOUNT_SCOPE_REF  # anything else is refused by services.ledger.budgets
        elif ref is None:
            raise ValueError("scope_ref is required: the API key's id, or the project's name")
        elif self.scope == BudgetScope.API_KEY and not (
            ref.isascii() and ref.isdigit() and 1 <= int(ref) <= MAX_BIGINT
        ):
            raise ValueError("scope_ref must be the id of one of this account's API keys")
        return self


class BudgetUpdate(Request):
    name: Name | None = None
    limit_credits: NonNegativeCredits | None = None


class BudgetOut(BaseModel):
    id: int
    name: str
    scope: str
    scope_ref: str
    period: str
    limit_credits: int
    used_credits: int
    period_start: datetime
    created_at: datetime
    updated_at: datetime


class GrantIn(Request):
    amount_credits: PositiveCredits
    expires_at: Instant | None = None
    reason: Description | None = None


class AdjustmentIn(Request):
    # Positive adds a lot; negative draws like a spend (zero is no adjustment).
    amount_credits: SignedCredits
    reason: Annotated[Text, Field(min_length=1, max_length=500)]


class MintOut(BaseModel):
    lot_id: int
    transaction_id: int
    amount_credits: int
    debt_repaid_credits: int
    expires_at: datetime
    replayed: bool


class ViolationOut(BaseModel):
    invariant: str
    subject: str
    detail: str


LotPage = Page[LotOut]
TransactionPage = Page[TransactionOut]
BudgetPage = Page[BudgetOut]
AccountPage = Page[AccountOut]


class InvariantReport(BaseModel):
    ok: bool
    violations: list[ViolationOut]
