"""The ledger's row shapes: what ``repository``'s reads for endpoints, history and balances return (see
``services.core.rows``): SQLAlchemy's rows as they come, typed by a Protocol per shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from services.core.rows import RowShape


class AccountRow(RowShape, Protocol):
    """A row of ``accounts``."""

    id: int
    kind: str
    code: str | None
    name: str
    debt_credits: int
    created_at: datetime
    email: str | None
    email_verified: bool


class TransactionRow(RowShape, Protocol):
    """A row of ``ledger_transactions``."""

    id: int
    kind: str
    idempotency_key: str
    request_hash: str | None
    account_id: int | None
    created_at: datetime
    description: str | None
    details: dict[str, Any]


class LotRow(RowShape, Protocol):
    """A row of ``lots``."""

    id: int
    account_id: int
    rail: str
    external_ref: str
    cost_basis_cents: int | None
    cost_basis_usdc_units: int | None
    promotional: bool
    credits: int
    remaining_credits: int
    reserved_credits: int
    expired_credits: int
    clawed_back_credits: int
    credited_at: datetime
    expires_at: datetime
    mint_transaction_id: int
    details: dict[str, Any]


class AccountTransaction(RowShape, Protocol):
    """A journal transaction as one account's history shows it: some columns of ``ledger_transactions``, and the
    signed amount of its entry on that account (of ``ledger_entries``)."""

    id: int
    kind: str
    created_at: datetime
    description: str | None
    details: dict[str, Any]
    amount_credits: int


class BudgetRow(RowShape, Protocol):
    """A row of ``budgets``."""

    id: int
    account_id: int
    name: str
    scope: str
    scope_ref: str
    period: str
    limit_credits: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class EntryAmount(RowShape, Protocol):
    """One entry of a journal transaction: some columns of ``ledger_entries``."""

    account_id: int
    amount_credits: int


class MovementAmount(RowShape, Protocol):
    """One lot movement of a journal transaction: some columns of ``lot_movements``."""

    lot_id: int
    kind: str
    amount_credits: int


class LotTotals(Protocol):
    """Sums over an account's lots with credits left."""

    remaining: int
    reserved: int
    unreserved_live: int
    expiring_soon: int
    next_expiry: datetime | None
