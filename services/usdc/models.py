"""The USDC rail's tables.

- ``deposit_addresses``: one per account and chain, derived from the configured xpub at the account's index; it
  also carries the account's sub-credit remainder on that chain (USDC base units not yet worth a whole credit, and
  deposits below the minimum), which the next deposit adds to.
- ``chain_cursors``: per chain, the next block the listener scans and the head it last saw.
- ``chain_blocks``: the hashes of recent scanned blocks, to notice a reorg.
- ``usdc_deposits``: every USDC Transfer to a deposit address, stored once by (chain id, tx hash, log index); it
  moves observed -> confirmed -> credited (or carried, when below the minimum), or -> orphaned when its block
  leaves the canonical chain, or -> set aside (with its reason, and a finance exception) when it cannot be credited
  at all (an amount beyond what one mint may be, say), so it never holds back the deposits after it. ``via`` says
  who recorded it: the listener, a claim of its transaction, or an x402 settlement. Amounts are
  the token's uint256 as sent: NUMERIC(78, 0) on PostgreSQL, decimal text on SQLite (whose integers stop at 2^63).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class DepositStatus(StrEnum):
    OBSERVED = "observed"
    CONFIRMED = "confirmed"
    CREDITED = "credited"
    # Confirmed, but worth less than the minimum (with what was carried): the amount is carried, not credited.
    CARRIED = "carried"
    ORPHANED = "orphaned"
    # Confirmed, but it cannot be credited (``set_aside_reason`` says why); a finance exception says what to do.
    SET_ASIDE = "set_aside"


class DepositVia(StrEnum):
    """Who recorded a deposit (or credited it first): the chain's poll, the payer's claim of its transaction, or our
    own x402 settlement (which marks its transfer as such whoever recorded it)."""

    LISTENER = "listener"
    CLAIM = "claim"
    X402 = "x402"


class SetAsideReason(StrEnum):
    # The amount is beyond what one mint may be (max_amount_credits), or beyond a 64-bit integer of base units.
    AMOUNT_TOO_LARGE = "amount_too_large"
    # Crediting refused it for another reason of its own (the error's code follows, after a colon).
    CREDIT_REFUSED = "credit_refused"


UINT256_DIGITS = 78
"""Decimal digits of the largest uint256 (2^256 - 1 has 78)."""


class TokenUnits(TypeDecorator[int]):
    """A token amount in base units, any uint256: NUMERIC(78, 0) on PostgreSQL; decimal text on SQLite, whose
    INTEGER stops at 2^63 - 1 and whose NUMERIC affinity turns larger numbers into floats. An ``int`` in Python."""

    impl = Numeric(UINT256_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(UINT256_DIGITS))
        return dialect.type_descriptor(Numeric(UINT256_DIGITS, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(int(value)) if dialect.name == "sqlite" else int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class DepositAddress(SQLModel, table=True):
    __tablename__ = "deposit_addresses"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False))
    chain_id: int = Field(sa_type=BigInteger)
    derivation_index: int = Field(sa_type=BigInteger)
    # Lowercase 0x hex.
    address: str = Field(max_length=42)
    carry_usdc_units: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(sa_type=UTCDateTime)

    __table_args__ = (
        UniqueConstraint("account_id", "chain_id", name="uq_deposit_addresses_account_chain"),
        UniqueConstraint("chain_id", "address", name="uq_deposit_addresses_chain_address"),
        CheckConstraint("carry_usdc_units >= 0", name="ck_deposit_addresses_carry_nonnegative"),
    )


class ChainCursor(SQLModel, table=True):
    __tablename__ = "chain_cursors"

    chain_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # The first block not yet scanned.
    next_block: int = Field(sa_type=BigInteger)
    # The scanner's current range size (it shrinks on provider refusals and grows when quiet).
    range_blocks: int = Field(default=1_000, sa_type=BigInteger)
    head_block: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=1000)
    last_error_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class ChainBlock(SQLModel, table=True):
    __tablename__ = "chain_blocks"

    chain_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    number: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: str = Field(max_length=66)


class UsdcDeposit(SQLModel, table=True):
    __tablename__ = "usdc_deposits"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    chain_id: int = Field(sa_type=BigInteger)
    tx_hash: str = Field(max_length=66)
    log_index: int = Field(sa_type=BigInteger)
    block_number: int = Field(sa_type=BigInteger)
    block_hash: str = Field(max_length=66)
    from_address: str = Field(max_length=42)
    to_address: str = Field(max_length=42)
    # The account of the deposit address (to_address). It must name an account, as a foreign key to accounts.id
    # would make it, but the check is triggers (migration 0007): once per statement on PostgreSQL, where the
    # listener stores thousands of deposits in one COPY, rather than a query and a row lock per deposit.
    account_id: int = Field(sa_type=BigInteger)
    amount_usdc_units: int = Field(sa_type=TokenUnits)
    status: str = Field(default=DepositStatus.OBSERVED, max_length=16)
    # Why a deposit is set aside (a SetAsideReason, and detail), else None.
    set_aside_reason: str | None = Field(default=None, max_length=255)
    observed_at: datetime = Field(sa_type=UTCDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    credited_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    orphaned_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    # What crediting did: the carry it took in, the credits it minted, the carry it left.
    carry_in_usdc_units: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    credits_minted: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    carry_out_usdc_units: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    lot_id: int | None = Field(default=None, sa_column=Column(BigInteger, ForeignKey("lots.id"), nullable=True))
    # Reorgs deeper than the confirmations that took this deposit away after it was settled (each a clawback and a
    # finance exception; a re-inclusion reinstates), and how much the last one took out of the account's carry
    # (negative: gave back), for the re-inclusion to put back exactly.
    deep_reorgs: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    carry_reversed_usdc_units: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    # A DepositVia (migration 0019; null for none of today's writers).
    via: str | None = Field(default=None, max_length=16, nullable=True)

    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_usdc_deposits_chain_tx_log"),
        CheckConstraint("amount_usdc_units > 0", name="ck_usdc_deposits_amount_positive"),
        # Deposits pending confirmation (status observed, oldest blocks first), and the live ones at or above a
        # reorg's fork point (a few statuses, recent blocks): one index serves both.
        Index("ix_usdc_deposits_chain_status_block", "chain_id", "status", "block_number"),
        Index("ix_usdc_deposits_account", "account_id", "observed_at"),
    )
