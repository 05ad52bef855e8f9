"""The ledger's tables.

- ``accounts``: one per customer, plus system accounts (funding per rail, usage revenue, breakage, clawbacks,
  promotions, adjustments). A customer's row is the lock every operation on that customer takes first.
- ``ledger_transactions`` / ``ledger_entries``: the double-entry journal, append-only (database triggers refuse
  UPDATE and DELETE). Each transaction has a kind and a unique idempotency key; its entries sum to zero.
- ``lots``: what a mint created, with its provenance, and what is left of it. ``lot_movements`` is the
  append-only history of every change to a lot's remaining credits (so each spend records the lots it drew from).
- ``holds`` / ``hold_allocations``: reservations on specific lots for tool calls.
- ``budgets`` / ``budget_usage`` / ``hold_budget_charges``: spending caps and what counted against them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    UniqueConstraint,
    false,
    text,
)
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    SYSTEM = "system"


class TransactionKind(StrEnum):
    MINT = "mint"
    GRANT = "grant"
    SPEND = "spend"
    CAPTURE = "capture"
    EXPIRY = "expiry"
    CLAWBACK = "clawback"
    REINSTATEMENT = "reinstatement"
    ADJUSTMENT = "adjustment"


class MovementKind(StrEnum):
    MINT = "mint"
    DEBT_REPAYMENT = "debt_repayment"
    SPEND = "spend"
    CAPTURE = "capture"
    EXPIRY = "expiry"
    CLAWBACK = "clawback"
    REINSTATEMENT = "reinstatement"
    ADJUSTMENT = "adjustment"


class Rail(StrEnum):
    CARD = "card"
    USDC = "usdc"
    GRANT = "grant"
    ADJUSTMENT = "adjustment"


class HoldStatus(StrEnum):
    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


class BudgetScope(StrEnum):
    API_KEY = "api_key"
    PROJECT = "project"
    # The whole account: every charge and hold its programs make, whatever the key or project.
    ACCOUNT = "account"


# An account-wide budget's scope_ref: there is nothing to name.
ACCOUNT_SCOPE_REF = "*"


class BudgetPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


def _fk(target: str, *, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_column=Column(BigInteger, ForeignKey(target), nullable=nullable, index=index),
    )


def _credits(default: int | None = None, *, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=BigInteger, nullable=True)
    if default is None:
        return Field(sa_type=BigInteger, nullable=False)
    return Field(default=default, sa_type=BigInteger, nullable=False)


def _timestamp(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None if nullable else ..., sa_type=UTCDateTime, nullable=nullable, index=index)


def _json() -> Any:
    return Field(default_factory=dict, sa_type=JSON, nullable=False)


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    kind: str = Field(max_length=16)
    # System accounts are found by code ("breakage", "funding:card", "funding:usdc:8453" ...).
    code: str | None = Field(default=None, max_length=64, unique=True)
    name: str = Field(max_length=200)
    # Credits the account owes after a clawback of already-spent credits; the next mint repays it first.
    debt_credits: int = _credits(0)
    created_at: datetime = _timestamp()
    # Where receipts and notices go (none without it); set by the platform, changeable by the customer (a change by
    # the customer makes it unverified).
    email: str | None = Field(default=None, max_length=320)
    # A database default only, so rows inserted by code that predates the column are unverified too.
    email_verified: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))

    __table_args__ = (CheckConstraint("debt_credits >= 0", name="ck_accounts_debt_nonnegative"),)


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "ledger_transactions"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    kind: str = Field(max_length=32, index=True)
    idempotency_key: str = Field(max_length=255, unique=True)
    # Fingerprint of the request that created it, to tell a retry from a reused key.
    request_hash: str | None = Field(default=None, max_length=64)
    # The customer account the transaction concerns, when there is one.
    account_id: int | None = _fk("accounts.id", nullable=True)
    created_at: datetime = _timestamp(index=True)
    description: str | None = Field(default=None, max_length=500)
    details: dict[str, Any] = _json()

    __table_args__ = (Index("ix_ledger_transactions_account_created", "account_id", "created_at"),)


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    transaction_id: int = _fk("ledger_transactions.id", index=True)
    account_id: int = _fk("accounts.id")
    # Signed: positive credits the account, negative debits it. The entries of a transaction sum to zero.
    amount_credits: int = _credits()
    created_at: datetime = _timestamp()

    __table_args__ = (
        CheckConstraint("amount_credits <> 0", name="ck_ledger_entries_nonzero"),
        Index("ix_ledger_entries_account_created", "account_id", "created_at"),
    )


# Lots' pages are filled to this percentage by inserts, the rest left for updated versions of their rows.
LOTS_FILLFACTOR = 85


class Lot(SQLModel, table=True):
    __tablename__ = "lots"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    account_id: int = _fk("accounts.id")
    rail: str = Field(max_length=16)
    # Provenance: a Stripe Checkout Session / PaymentIntent id, "chain:tx:log", a grant's key ...
    external_ref: str = Field(max_length=255)
    cost_basis_cents: int | None = _credits(nullable=True)
    cost_basis_usdc_units: int | None = _credits(nullable=True)
    promotional: bool = Field(default=False)
    credits: int = _credits()
    remaining_credits: int = _credits()
    reserved_credits: int = _credits(0)
    # Credits of this lot that went to breakage and were not taken back by a clawback since.
    expired_credits: int = _credits(0)
    # Credits clawed back from this lot and not reinstated (bounds a later reinstatement).
    clawed_back_credits: int = _credits(0)
    credited_at: datetime = _timestamp()
    expires_at: datetime = _timestamp()
    mint_transaction_id: int = _fk("ledger_transactions.id")
    details: dict[str, Any] = _json()

    __table_args__ = (
        UniqueConstraint("rail", "external_ref", name="uq_lots_rail_external_ref"),
        CheckConstraint("credits > 0", name="ck_lots_credits_positive"),
        CheckConstraint(
            "reserved_credits >= 0 AND reserved_credits <= remaining_credits", name="ck_lots_reserved_within"
        ),
        CheckConstraint("clawed_back_credits >= 0", name="ck_lots_clawed_back_nonnegative"),
        CheckConstraint("expired_credits >= 0", name="ck_lots_expired_nonnegative"),
        # Draw-down order. No index of lots names a column that a spend, a hold or expiry changes (not even in a
        # predicate), so that their updates are HOT on PostgreSQL: the new row version stays on its page and no
        # index gets a new entry. The expiry job's queue is a table of its own (``lot_expiry_queue``).
        Index("ix_lots_drawable", "account_id", "expires_at", "credited_at", "id"),
        # Lots by expiry time (alerts about credits expiring soon).
        Index("ix_lots_expires", "expires_at", "id"),
        Index("ix_lots_account_credited", "account_id", "credited_at"),
        # A rail's lots by the time they were credited (finance's reports and reconciliation of a period).
        Index("ix_lots_rail_credited", "rail", "credited_at"),
        # Room on each page for the new versions of its rows (HOT updates need it; PostgreSQL only).
        {"postgresql_with": {"fillfactor": LOTS_FILLFACTOR}},
    )


class LotExpiryQueue(SQLModel, table=True):
    """The lots whose time the expiry job has yet to deal with: a lot's row is written with the lot (its mint) and
    removed by the expiry batch that takes the lot once its time has come, whatever it finds on it then (its
    unreserved remainder expires; what is reserved expires when its hold resolves, and credits a lot gets back
    later expire at once). The job reads this queue rather than the lots, so that expiring a lot changes nothing
    that an index of lots names. Lots are never deleted, so ``lot_id`` needs no foreign key to stay true."""

    __tablename__ = "lot_expiry_queue"

    expires_at: datetime = Field(sa_type=UTCDateTime, primary_key=True)
    lot_id: int = Field(sa_type=BigInteger, primary_key=True)
    account_id: int = Field(sa_type=BigInteger)

    # An account's lots in the queue, soonest first (a batch takes every due lot of the accounts it reaches).
    __table_args__ = (Index("ix_lot_expiry_queue_account", "account_id", "expires_at", "lot_id"),)


class LotMovement(SQLModel, table=True):
    __tablename__ = "lot_movements"

    # The lot, the journal transaction and (for captures) the hold must exist, as foreign keys would make them, but
    # the check is triggers (migration 0008): once per statement on PostgreSQL, where the expiry job writes
    # thousands of movements in one statement, rather than a query and a row lock per movement and reference. Lots
    # and holds are never deleted nor renumbered (also triggers); journal transactions are immutable.
    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    lot_id: int = Field(sa_type=BigInteger)
    transaction_id: int = Field(sa_type=BigInteger, index=True)
    kind: str = Field(max_length=32)
    # Signed change to the lot's remaining credits.
    amount_credits: int = _credits()
    # For captures: the hold whose reservation was drawn.
    hold_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    created_at: datetime = _timestamp()

    __table_args__ = (
        CheckConstraint("amount_credits <> 0", name="ck_lot_movements_nonzero"),
        # A lot's history in order, and its latest movement (the expiry job's key) without a table scan.
        Index("ix_lot_movements_lot_id_id", "lot_id", "id"),
    )


class Hold(SQLModel, table=True):
    __tablename__ = "holds"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    account_id: int = _fk("accounts.id")
    api_key_id: int | None = _fk("api_keys.id", nullable=True)
    project: str | None = Field(default=None, max_length=100)
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    amount_credits: int = _credits()
    captured_credits: int = _credits(0)
    status: str = Field(default=HoldStatus.ACTIVE, max_length=16)
    description: str | None = Field(default=None, max_length=500)
    created_at: datetime = _timestamp()
    expires_at: datetime = _timestamp()
    resolved_at: datetime | None = _timestamp(nullable=True)
    capture_transaction_id: int | None = _fk("ledger_transactions.id", nullable=True)

    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key", name="uq_holds_account_idempotency_key"),
        CheckConstraint("amount_credits > 0", name="ck_holds_amount_positive"),
        CheckConstraint("captured_credits >= 0 AND captured_credits <= amount_credits", name="ck_holds_capture_within"),
        Index(
            "ix_holds_active_expiry",
            "expires_at",
            "id",
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_holds_account_created", "account_id", "created_at"),
    )


class HoldAllocation(SQLModel, table=True):
    __tablename__ = "hold_allocations"

    hold_id: int = Field(sa_column=Column(BigInteger, ForeignKey("holds.id"), primary_key=True))
    lot_id: int = Field(sa_column=Column(BigInteger, ForeignKey("lots.id"), primary_key=True))
    # Draw order inside the hold (the lots' draw-down order when it was made).
    position: int = Field(default=0)
    amount_credits: int = _credits()

    __table_args__ = (CheckConstraint("amount_credits > 0", name="ck_hold_allocations_positive"),)


class Budget(SQLModel, table=True):
    __tablename__ = "budgets"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    account_id: int = _fk("accounts.id", index=True)
    name: str = Field(max_length=100)
    scope: str = Field(max_length=16)
    # The API key id (as text) or the project name the cap applies to.
    scope_ref: str = Field(max_length=100)
    period: str = Field(max_length=8)
    limit_credits: int = _credits()
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    deleted_at: datetime | None = _timestamp(nullable=True)

    __table_args__ = (CheckConstraint("limit_credits >= 0", name="ck_budgets_limit_nonnegative"),)


class BudgetUsage(SQLModel, table=True):
    __tablename__ = "budget_usage"

    budget_id: int = Field(sa_column=Column(BigInteger, ForeignKey("budgets.id"), primary_key=True))
    period_start: datetime = Field(sa_column=Column(UTCDateTime, primary_key=True))
    # Spent plus held (active holds count in full until they resolve).
    used_credits: int = _credits(0)


class HoldBudgetCharge(SQLModel, table=True):
    __tablename__ = "hold_budget_charges"

    hold_id: int = Field(sa_column=Column(BigInteger, ForeignKey("holds.id"), primary_key=True))
    budget_id: int = Field(sa_column=Column(BigInteger, ForeignKey("budgets.id"), primary_key=True))
    period_start: datetime = Field(sa_type=UTCDateTime)
    amount_credits: int = _credits()


# Tables whose rows are never updated or deleted once written (enforced by triggers in the migrations).
IMMUTABLE_TABLES = ("ledger_transactions", "ledger_entries", "lot_movements")
