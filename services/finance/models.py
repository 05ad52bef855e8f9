"""Finance's tables (the review queue both rails raise into, ``finance_exceptions``, is services.review's).

- ``stripe_balance_transactions`` / ``stripe_checkout_sessions``: a local mirror of what Stripe reports (balance
  transactions with fee and net, and the Checkout Sessions they belong to), pulled through the Stripe API with their
  raw JSON, independently of the webhook path that minted.
- ``chain_transfer_records``: USDC Transfer logs to deposit addresses, re-scanned from the chain for a period's
  block range, independently of the listener's tables.
- ``finance_pulls``: each pull of external records (a source and a time window): where it got to, so a pull that
  failed half way resumes, and a complete one is not fetched again.
- ``reconciliation_runs`` / ``reconciliation_items``: one run per (rail, period), re-run in place; each item sorts
  one external record or ledger lot into matched, missing in the ledger, missing externally or amount mismatch.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class PullStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class ItemCategory(StrEnum):
    MATCHED = "matched"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_EXTERNALLY = "missing_externally"
    AMOUNT_MISMATCH = "amount_mismatch"


class ItemKind(StrEnum):
    # A card payment (a Stripe charge) and the lot it minted.
    PAYMENT = "payment"
    # Refunds and disputes of a charge, against the credits clawed back (and reinstated) from its lot.
    REFUND = "refund"
    DISPUTE = "dispute"
    # A USDC Transfer to a deposit address and the lot it minted.
    DEPOSIT = "deposit"


class StripeBalanceTransaction(SQLModel, table=True):
    __tablename__ = "stripe_balance_transactions"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    stripe_id: str = Field(max_length=255, unique=True)
    # Stripe's type ("charge", "payment", "refund", "payment_refund", "adjustment" ...) and reporting category
    # ("charge", "refund", "dispute", "dispute_reversal" ...).
    type: str = Field(max_length=64)
    reporting_category: str = Field(max_length=64)
    # The object that moved the money (ch_, re_, du_ ...), the charge it belongs to and that charge's PaymentIntent.
    source_id: str | None = Field(default=None, max_length=255)
    charge_id: str | None = Field(default=None, max_length=255, index=True)
    payment_intent_id: str | None = Field(default=None, max_length=255, index=True)
    # Signed, in the currency's minor unit (US cents): gross, Stripe's fee, and net.
    amount_cents: int = Field(sa_type=BigInteger)
    fee_cents: int = Field(sa_type=BigInteger)
    net_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=8)
    status: str = Field(max_length=32)
    stripe_created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    raw: str = Field(sa_column=Column(Text, nullable=False))
    fetched_at: datetime = Field(sa_type=UTCDateTime)


class StripeCheckoutSessionRecord(SQLModel, table=True):
    __tablename__ = "stripe_checkout_sessions"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    stripe_id: str = Field(max_length=255, unique=True)
    payment_intent_id: str | None = Field(default=None, max_length=255, index=True)
    amount_total_cents: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    currency: str | None = Field(default=None, max_length=8)
    status: str | None = Field(default=None, max_length=32)
    payment_status: str | None = Field(default=None, max_length=32)
    # The account the session was for, as its metadata / client_reference_id names it (text, unchecked).
    account_ref: str | None = Field(default=None, max_length=64)
    stripe_created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    raw: str = Field(sa_column=Column(Text, nullable=False))
    fetched_at: datetime = Field(sa_type=UTCDateTime)


class ChainTransferRecord(SQLModel, table=True):
    __tablename__ = "chain_transfer_records"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    chain_id: int = Field(sa_type=BigInteger)
    tx_hash: str = Field(max_length=66)
    log_index: int = Field(sa_type=BigInteger)
    block_number: int = Field(sa_type=BigInteger)
    block_hash: str = Field(max_length=66)
    from_address: str = Field(max_length=42)
    to_address: str = Field(max_length=42)
    amount_usdc_units: int = Field(sa_type=BigInteger)
    # "<chain id>:<tx hash>:<log index>": the same reference a USDC lot carries as its external_ref.
    reference: str = Field(max_length=255, index=True)
    scanned_at: datetime = Field(sa_type=UTCDateTime)

    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_chain_transfer_records_chain_tx_log"),
        Index("ix_chain_transfer_records_chain_block", "chain_id", "block_number"),
    )


class FinancePull(SQLModel, table=True):
    __tablename__ = "finance_pulls"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # "stripe:balance_transactions", "stripe:checkout_sessions", "chain:<chain id>".
    source: str = Field(max_length=64)
    window_start: datetime = Field(sa_type=UTCDateTime)
    window_end: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(max_length=16)
    # Where to go on: Stripe's ``starting_after`` object id, or the next block to scan.
    cursor: str | None = Field(default=None, max_length=255)
    pages: int = Field(default=0, sa_type=BigInteger)
    records: int = Field(default=0, sa_type=BigInteger)
    # E.g. the block range a period maps to on a chain.
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    last_error: str | None = Field(default=None, max_length=2000)
    started_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("source", "window_start", "window_end", name="uq_finance_pulls_source_window"),)


class ReconciliationRun(SQLModel, table=True):
    __tablename__ = "reconciliation_runs"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # "card" or "usdc:<chain id>".
    rail: str = Field(max_length=32)
    period_start: datetime = Field(sa_type=UTCDateTime)
    period_end: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(max_length=16)
    attempts: int = Field(default=0)
    external_records: int = Field(default=0, sa_type=BigInteger)
    ledger_records: int = Field(default=0, sa_type=BigInteger)
    matched: int = Field(default=0, sa_type=BigInteger)
    missing_in_ledger: int = Field(default=0, sa_type=BigInteger)
    missing_externally: int = Field(default=0, sa_type=BigInteger)
    amount_mismatch: int = Field(default=0, sa_type=BigInteger)
    late: int = Field(default=0, sa_type=BigInteger)
    last_error: str | None = Field(default=None, max_length=2000)
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("rail", "period_start", "period_end", name="uq_reconciliation_runs_rail_period"),
    )


class ReconciliationItem(SQLModel, table=True):
    __tablename__ = "reconciliation_items"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    run_id: int = Field(sa_column=Column(BigInteger, ForeignKey("reconciliation_runs.id"), nullable=False))
    kind: str = Field(max_length=16)
    category: str = Field(max_length=32)
    # Paid (or sent) in one period and credited in another.
    late: bool = Field(default=False)
    # The external record (a Stripe balance transaction id, or "<chain>:<tx>:<log>") and the ledger lot.
    external_ref: str | None = Field(default=None, max_length=255)
    # The reference a lot for it carries (or would carry): a Checkout Session or PaymentIntent id, a chain reference.
    lot_ref: str | None = Field(default=None, max_length=255)
    lot_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    account_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    external_amount_cents: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    external_amount_usdc_units: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    # The credits the external record should have made (or clawed back), and what the ledger shows.
    expected_credits: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    ledger_credits: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    external_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    ledger_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    # E.g. "carried" (a USDC transfer below the minimum: no lot of its own, its amount carried to the next deposit),
    # "clawed_back" (a lot whose external record is gone, already clawed back).
    note: str | None = Field(default=None, max_length=64)

    __table_args__ = (Index("ix_reconciliation_items_run_category", "run_id", "category", "id"),)
