"""The card rail's tables.

- ``card_customers``: the Stripe Customer reused for every purchase of an account, and the card it saved for
  off-session charges.
- ``card_purchases``: every card purchase, recorded (pending) before Stripe is called: a Checkout Session bought by
  the customer, or an off-session PaymentIntent charged by auto-recharge. Unique per (account, idempotency key), per
  Checkout Session and per PaymentIntent. It moves pending -> open -> (processing ->) completed, or to failed,
  expired (Stripe expired the session, or its ``expires_at`` and a grace passed with the session no longer payable)
  or review (an amount that does not match: a finance exception, nothing minted). It also keeps the
  cumulative refunded amount Stripe reported, so a refund seen before the mint is clawed back right after it, and
  the card that paid (brand and last four digits, as the charge's ``payment_method_details.card`` gives them).
- ``card_disputes``: each dispute on a purchase's charge, with what was clawed back and reinstated for it.
- ``card_clawbacks``: every clawback and reinstatement made for a purchase (the ledger transaction, credits and the
  refund or dispute it answers), unique per (kind, reference).
- ``stripe_webhook_events``: the inbox. Each verified event stored once by its Stripe id, then processed off the
  request path; failures are retried with backoff and stay visible (status, attempts, last error).
- ``card_auto_recharge``: an account's auto-recharge settings and state (armed for the next crossing, failures in a
  row, the last failure told to the customer).
- ``card_sync_cursors``: how far the sync job has read Stripe's event list.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class PurchaseKind(StrEnum):
    CHECKOUT = "checkout"
    AUTO_RECHARGE = "auto_recharge"


class PurchaseStatus(StrEnum):
    # Recorded; Stripe not called yet, or the call failed (retrying with the same idempotency key is safe).
    PENDING = "pending"
    # The Checkout Session exists; the customer is paying.
    OPEN = "open"
    # Paid for with a method that settles later (or an off-session charge still processing).
    PROCESSING = "processing"
    # Paid and minted.
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    # Stripe says paid, but not what this purchase was for: a finance exception, nothing minted.
    REVIEW = "review"


UNFINISHED_STATUSES = (PurchaseStatus.PENDING, PurchaseStatus.OPEN, PurchaseStatus.PROCESSING)


class InboxStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    # An event type we do not act on: acknowledged and kept, nothing done.
    IGNORED = "ignored"
    # Processing failed; retried at next_attempt_at.
    FAILED = "failed"
    # Failed too many times: a finance exception, retried only by hand.
    DEAD = "dead"


RETRYABLE_INBOX_STATUSES = (InboxStatus.PENDING, InboxStatus.FAILED)


class ClawbackKind(StrEnum):
    REFUND = "refund"
    DISPUTE = "dispute"
    DISPUTE_REINSTATEMENT = "dispute_reinstatement"


def _fk(target: str, *, nullable: bool = False, index: bool = False, primary_key: bool = False) -> Any:
    return Field(
        default=None if nullable or primary_key else ...,
        sa_column=Column(BigInteger, ForeignKey(target), nullable=nullable, index=index, primary_key=primary_key),
    )


def _amount(default: int | None = None, *, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=BigInteger, nullable=True)
    if default is None:
        return Field(sa_type=BigInteger, nullable=False)
    return Field(default=default, sa_type=BigInteger, nullable=False)


def _timestamp(*, nullable: bool = False) -> Any:
    return Field(default=None if nullable else ..., sa_type=UTCDateTime, nullable=nullable)


class CardCustomer(SQLModel, table=True):
    __tablename__ = "card_customers"

    account_id: int = _fk("accounts.id", primary_key=True)
    stripe_customer_id: str = Field(max_length=255, unique=True)
    # The card saved at checkout (setup_future_usage=off_session), charged by auto-recharge.
    payment_method_id: str | None = Field(default=None, max_length=255)
    payment_method_saved_at: datetime | None = _timestamp(nullable=True)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class CardPurchase(SQLModel, table=True):
    __tablename__ = "card_purchases"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    account_id: int = _fk("accounts.id")
    kind: str = Field(max_length=16)
    # "starter", "standard", "pro", "business" or "custom".
    pack: str = Field(max_length=32)
    amount_credits: int = _amount()
    # The price, in US cents (the currency is always USD).
    amount_cents: int = _amount()
    status: str = Field(default=PurchaseStatus.PENDING, max_length=16)
    # "checkout:<the customer's Idempotency-Key>" or "auto-recharge:<crossing>".
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    save_card: bool = Field(default=False)
    # For auto-recharge: which crossing of the threshold this purchase answers.
    crossing: int | None = _amount(nullable=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    checkout_session_id: str | None = Field(default=None, max_length=255)
    checkout_url: str | None = Field(default=None, max_length=2048)
    # When the Checkout Session stops being payable (its ``expires_at``); past it, and a grace, the sync job expires
    # a purchase still open.
    checkout_expires_at: datetime | None = _timestamp(nullable=True)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    charge_id: str | None = Field(default=None, max_length=255, index=True)
    # What Stripe reported as paid, and the cumulative amount it reported as refunded.
    amount_paid_cents: int | None = _amount(nullable=True)
    refunded_cents: int = _amount(0)
    # The card paid with, as Stripe describes it (the charge's payment_method_details.card): its brand code ("visa")
    # and last four digits; null until known.
    card_brand: str | None = Field(default=None, max_length=32)
    card_last4: str | None = Field(default=None, max_length=4)
    lot_id: int | None = _fk("lots.id", nullable=True)
    # Why it is not (yet) completed, in a code and a sentence the customer can read.
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=500)
    # Calls to Stripe that failed while starting it, and the last such error.
    stripe_attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    completed_at: datetime | None = _timestamp(nullable=True)

    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key", name="uq_card_purchases_account_idempotency_key"),
        UniqueConstraint("checkout_session_id", name="uq_card_purchases_checkout_session_id"),
        UniqueConstraint("payment_intent_id", name="uq_card_purchases_payment_intent_id"),
        CheckConstraint("amount_credits > 0", name="ck_card_purchases_credits_positive"),
        CheckConstraint("amount_cents > 0", name="ck_card_purchases_cents_positive"),
        CheckConstraint("refunded_cents >= 0", name="ck_card_purchases_refunded_nonnegative"),
        Index("ix_card_purchases_account_created", "account_id", "created_at"),
        Index("ix_card_purchases_status_created", "status", "created_at"),
        Index("ix_card_purchases_status_checkout_expires_at", "status", "checkout_expires_at"),
    )


class CardDispute(SQLModel, table=True):
    __tablename__ = "card_disputes"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    dispute_id: str = Field(max_length=255, unique=True)
    purchase_id: int = _fk("card_purchases.id", index=True)
    charge_id: str | None = Field(default=None, max_length=255)
    amount_cents: int = _amount()
    # Stripe's dispute status (needs_response, under_review, won, lost, warning_closed ...).
    status: str = Field(max_length=32)
    clawed_back_credits: int = _amount(0)
    reinstated_credits: int = _amount(0)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    closed_at: datetime | None = _timestamp(nullable=True)


class CardClawback(SQLModel, table=True):
    __tablename__ = "card_clawbacks"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    purchase_id: int = _fk("card_purchases.id", index=True)
    lot_id: int = _fk("lots.id")
    kind: str = Field(max_length=32)
    # "<purchase id>:<cumulative refunded cents>" for refunds, the dispute id for disputes.
    reference: str = Field(max_length=255)
    # The payment amount this answers (newly refunded, or disputed) and the credits it moved.
    amount_cents: int = _amount()
    amount_credits: int = _amount()
    transaction_id: int = _fk("ledger_transactions.id")
    created_at: datetime = _timestamp()

    __table_args__ = (UniqueConstraint("kind", "reference", name="uq_card_clawbacks_kind_reference"),)


class StripeWebhookEvent(SQLModel, table=True):
    __tablename__ = "stripe_webhook_events"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    event_type: str = Field(max_length=100)
    livemode: bool = Field(default=False)
    api_version: str | None = Field(default=None, max_length=64)
    # The id of the event's data.object (a Checkout Session, charge, dispute ...).
    object_id: str | None = Field(default=None, max_length=255, index=True)
    stripe_created_at: datetime = _timestamp()
    # "webhook" or "sync" (read back from Stripe's event list by the sync job).
    source: str = Field(max_length=16)
    # The verified body, exactly as received.
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = _timestamp(nullable=True)
    last_error: str | None = Field(default=None, max_length=2000)
    # What processing did, e.g. "minted", "already_fulfilled", "exception:unknown_purchase".
    outcome: str | None = Field(default=None, max_length=200)
    # The purchase processing touched, when there was one (for operators looking the event up).
    purchase_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    received_at: datetime = _timestamp()
    processed_at: datetime | None = _timestamp(nullable=True)

    __table_args__ = (
        Index(
            "ix_stripe_webhook_events_due",
            "next_attempt_at",
            "id",
            sqlite_where=text("status IN ('pending', 'failed')"),
            postgresql_where=text("status IN ('pending', 'failed')"),
        ),
        Index("ix_stripe_webhook_events_status_received", "status", "received_at"),
    )


class CardAutoRecharge(SQLModel, table=True):
    __tablename__ = "card_auto_recharge"

    account_id: int = _fk("accounts.id", primary_key=True)
    enabled: bool = Field(default=False)
    threshold_credits: int = _amount()
    pack: str = Field(max_length=32)
    amount_credits: int = _amount()
    amount_cents: int = _amount()
    # True while the balance is at or above the threshold: the next fall below it is a crossing, charged once.
    armed: bool = Field(default=True)
    # Crossings charged so far (the last one's number is in its purchase and its Stripe idempotency key).
    crossings: int = _amount(0)
    consecutive_failures: int = Field(default=0)
    last_purchase_id: int | None = _fk("card_purchases.id", nullable=True)
    last_failure_code: str | None = Field(default=None, max_length=64)
    last_failure_message: str | None = Field(default=None, max_length=500)
    last_failure_at: datetime | None = _timestamp(nullable=True)
    # Why it turned itself off (e.g. "too_many_failures"); cleared when the customer turns it on again.
    disabled_reason: str | None = Field(default=None, max_length=64)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()

    __table_args__ = (
        CheckConstraint("threshold_credits >= 0", name="ck_card_auto_recharge_threshold_nonnegative"),
        Index(
            "ix_card_auto_recharge_enabled",
            "account_id",
            sqlite_where=text("enabled"),
            postgresql_where=text("enabled"),
        ),
    )


class CardSyncCursor(SQLModel, table=True):
    __tablename__ = "card_sync_cursors"

    name: str = Field(primary_key=True, max_length=64)
    # The newest Stripe ``created`` time (unix seconds) read completely so far.
    created_unix: int = _amount(0)
    updated_at: datetime = _timestamp()
