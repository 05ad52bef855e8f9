"""The USDC rail's row shapes: what its repository's reads return (see ``services.core.rows``).

Rows come as SQLAlchemy (or, on the listener's PostgreSQL path, psycopg) returns them: no copy, no validation, as
the listener stores and confirms deposits by the thousand. Each Protocol names the columns its select returns, with
their types; a row that may be missing comes as ``... | None``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.core.rows import RowShape


class AddressRow(RowShape, Protocol):
    """A row of ``deposit_addresses``."""

    id: int
    account_id: int
    chain_id: int
    derivation_index: int
    address: str
    carry_usdc_units: int
    created_at: datetime


class CursorRow(RowShape, Protocol):
    """A row of ``chain_cursors``."""

    chain_id: int
    next_block: int
    range_blocks: int
    head_block: int | None
    updated_at: datetime
    last_error: str | None
    last_error_at: datetime | None


class DepositRow(RowShape, Protocol):
    """A row of ``usdc_deposits``."""

    id: int
    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    to_address: str
    account_id: int
    amount_usdc_units: int
    status: str
    set_aside_reason: str | None
    observed_at: datetime
    confirmed_at: datetime | None
    credited_at: datetime | None
    orphaned_at: datetime | None
    carry_in_usdc_units: int | None
    credits_minted: int | None
    carry_out_usdc_units: int | None
    lot_id: int | None
    deep_reorgs: int
    carry_reversed_usdc_units: int | None
    via: str | None


class StoredDeposit(RowShape, Protocol):
    """What storing a scanned range needs to know of a deposit of ``usdc_deposits`` already stored."""

    id: int
    tx_hash: str
    log_index: int
    status: str
    block_hash: str
    account_id: int


class MissingAddress(RowShape, Protocol):
    """An account's address that a chain lacks: some columns of ``deposit_addresses``."""

    account_id: int
    derivation_index: int
    address: str
