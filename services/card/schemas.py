"""The card rail's API shapes. Amounts are strict integers named with their unit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from services.api.pages import Page
from services.api.types import MAX_BIGINT, StrictBool, Text

MAX_STORABLE = MAX_BIGINT

Credits = Annotated[int, Field(strict=True, gt=0, le=MAX_STORABLE)]
ThresholdCredits = Annotated[int, Field(strict=True, ge=0, le=MAX_STORABLE)]
PackCode = Annotated[Text, Field(min_length=1, max_length=32)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackOut(BaseModel):
    code: str
    name: str
    amount_credits: int
    amount_cents: int
    currency: str = "usd"


class CustomAmountOut(BaseModel):
    min_credits: int
    max_credits: int
    step_credits: int


class PacksOut(BaseModel):
    packs: list[PackOut]
    custom: CustomAmountOut
    credits_per_usd: int


class PurchaseIn(Request):
    """A fixed pack by its code, or a custom amount of credits (``pack`` absent or "custom")."""

    pack: PackCode | None = None
    amount_credits: Credits | None = None
    # Keep the card for off-session charges (auto-recharge). JSON true or false only.
    save_card: StrictBool = False


class PurchaseOut(BaseModel):
    id: int
    kind: str
    pack: str
    amount_credits: int
    amount_cents: int
    currency: str
    status: str
    save_card: bool
    checkout_url: str | None
    checkout_session_id: str | None
    payment_intent_id: str | None
    lot_id: int | None
    amount_paid_cents: int | None
    refunded_cents: int
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    # The card that paid, once Stripe said: its brand code ("visa"), last four digits, and "Visa ending 4242".
    card_brand: str | None = None
    card_last4: str | None = None
    card_label: str | None = None
    replayed: bool = False


class ConfirmIn(Request):
    # The {CHECKOUT_SESSION_ID} Stripe put in the success URL (needed only when the purchase has none on record).
    session_id: Annotated[Text, Field(min_length=1, max_length=255)] | None = None


class ConfirmOut(BaseModel):
    purchase: PurchaseOut
    # What this confirmation did: "minted", "already_fulfilled", "awaiting_payment" ...
    outcome: str


class HistoryItemOut(BaseModel):
    """One purchase, the same shape for every rail (card purchases and USDC deposits)."""

    rail: str
    id: int
    reference: str | None
    amount_cents: int | None
    amount_usdc_units: int | None
    credits: int
    status: str
    created_at: datetime
    completed_at: datetime | None
    lot_id: int | None
    refunded_cents: int | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


HistoryPage = Page[HistoryItemOut]


class AutoRechargeIn(Request):
    enabled: StrictBool
    threshold_credits: ThresholdCredits
    pack: PackCode


class AutoRechargeOut(BaseModel):
    enabled: bool
    threshold_credits: int
    pack: str
    amount_credits: int
    amount_cents: int
    has_saved_card: bool
    armed: bool
    crossings: int
    consecutive_failures: int
    last_failure_code: str | None
    last_failure_message: str | None
    last_failure_at: datetime | None
    disabled_reason: str | None
    last_purchase_id: int | None
    updated_at: datetime | None


class WebhookAck(BaseModel):
    received: bool
    event_id: str
    event_type: str
    status: str
    duplicate: bool


class WebhookEventOut(BaseModel):
    """A stored Stripe event, as operators look it up: where processing got to and why it failed, if it did."""

    id: int
    event_id: str
    event_type: str
    # "webhook" or "sync".
    source: str
    # pending, processed, ignored, failed (retried at next_attempt_at, or for good when that is null) or dead.
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    outcome: str | None
    # The Stripe object it is about (a Checkout Session, PaymentIntent, charge or dispute id).
    object_id: str | None
    purchase_id: int | None
    stripe_created_at: datetime
    received_at: datetime
    processed_at: datetime | None


class WebhookEventPage(Page[WebhookEventOut]):
    # How many events the inbox holds in each status.
    counts: dict[str, int]


class InboxPurchaseOut(BaseModel):
    id: int
    account_id: int
    kind: str
    status: str


class WebhookEventDetailOut(WebhookEventOut):
    # The purchase processing touched, as it is now.
    purchase: InboxPurchaseOut | None


class RetryOut(BaseModel):
    event_id: str
    outcome: str | None
