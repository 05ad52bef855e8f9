"""Finance's row shapes: what its reads of the mirrors, pulls and reconciliation runs return (see
``services.core.rows``): SQLAlchemy's rows as they come, typed by a Protocol per shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from services.core.rows import RowShape


class BalanceTransactionRow(RowShape, Protocol):
    """A row of ``stripe_balance_transactions``."""

    id: int
    stripe_id: str
    type: str
    reporting_category: str
    source_id: str | None
    charge_id: str | None
    payment_intent_id: str | None
    amount_cents: int
    fee_cents: int
    net_cents: int
    currency: str
    status: str
    stripe_created_at: datetime
    raw: str
    fetched_at: datetime


class TransferRecordRow(RowShape, Protocol):
    """A row of ``chain_transfer_records``."""

    id: int
    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    to_address: str
    amount_usdc_units: int
    reference: str
    scanned_at: datetime


class PullRow(RowShape, Protocol):
    """A row of ``finance_pulls``."""

    id: int
    source: str
    window_start: datetime
    window_end: datetime
    status: str
    cursor: str | None
    pages: int
    records: int
    details: dict[str, Any]
    last_error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RunRow(RowShape, Protocol):
    """A row of ``reconciliation_runs``."""

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


class ItemRow(RowShape, Protocol):
    """A row of ``reconciliation_items``."""

    id: int
    run_id: int
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
