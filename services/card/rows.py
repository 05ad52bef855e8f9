"""The card rail's row shapes: what its repository's reads return.

A repository returns SQLAlchemy's rows as they come (no copy, no validation: the webhook and fulfilment paths are
hot), typed by a Protocol per row shape (``services.core.rows.RowShape``) naming the columns its select returns, with
their types. mypy checks every
column a caller reads; ``tests/test_rows.py`` checks that each shape names only columns of its table. Rows are
read-only (SQLAlchemy refuses an assignment); a row that may be missing comes as ``... | None``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.core.rows import RowShape


class CustomerRow(RowShape, Protocol):
    """A row of ``card_customers``."""

    account_id: int
    stripe_customer_id: str
    payment_method_id: str | None
    payment_method_saved_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PurchaseRow(RowShape, Protocol):
    """A row of ``card_purchases``."""

    id: int
    account_id: int
    kind: str
    pack: str
    amount_credits: int
    amount_cents: int
    status: str
    idempotency_key: str
    request_hash: str
    save_card: bool
    crossing: int | None
    stripe_customer_id: str | None
    checkout_session_id: str | None
    checkout_url: str | None
    checkout_expires_at: datetime | None
    payment_intent_id: str | None
    charge_id: str | None
    amount_paid_cents: int | None
    refunded_cents: int
    card_brand: str | None
    card_last4: str | None
    lot_id: int | None
    failure_code: str | None
    failure_message: str | None
    stripe_attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class DisputeRow(RowShape, Protocol):
    """A row of ``card_disputes``."""

    id: int
    dispute_id: str
    purchase_id: int
    charge_id: str | None
    amount_cents: int
    status: str
    clawed_back_credits: int
    reinstated_credits: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class ClawbackRow(RowShape, Protocol):
    """A row of ``card_clawbacks``."""

    id: int
    purchase_id: int
    lot_id: int
    kind: str
    reference: str
    amount_cents: int
    amount_credits: int
    transaction_id: int
    created_at: datetime


class InboxEventRow(RowShape, Protocol):
    """A row of ``stripe_webhook_events``."""

    id: int
    event_id: str
    event_type: str
    livemode: bool
    api_version: str | None
    object_id: str | None
    stripe_created_at: datetime
    source: str
    payload: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    outcome: str | None
    purchase_id: int | None
    received_at: datetime
    processed_at: datetime | None


class AutoRechargeRow(RowShape, Protocol):
    """A row of ``card_auto_recharge``."""

    account_id: int
    enabled: bool
    threshold_credits: int
    pack: str
    amount_credits: int
    amount_cents: int
    armed: bool
    crossings: int
    consecutive_failures: int
    last_purchase_id: int | None
    last_failure_code: str | None
    last_failure_message: str | None
    last_failure_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class InboxEventRef(RowShape, Protocol):
    """Who an inbox event is, found by its Stripe id: some columns of ``stripe_webhook_events``."""

    id: int
    event_id: str
    event_type: str
    status: str


class ClaimedEvent(RowShape, Protocol):
    """An inbox event claimed for processing: some columns of ``stripe_webhook_events``."""

    id: int
    attempts: int
