"""The USDC rail's tables.

- ``deposit_addresses``: one per account and chain, derived from the configured xpub at the account's index; it
  also carries the account's sub-credit remainder on that chain (USDC base units not yet worth a whole credit, and
  deposits below the minimum), which the next deposit adds to.
- ``chain_cursors``: per chain, the next block the listener scans and the head it last saw.
- ``chain_blocks``: the hashes of recent scanned blocks, to notice a reorg.
- ``usdc_deposits``: every USDC Transfer to a deposit address, stored once by (chain id, tx hash, log index); it
  moves observed -> confirmed -> credited (or carried, when below the minimum), or -> orphaned when its block
  leaves the canonical chain.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class DepositStatus(StrEnum):
    OBSERVED = "observed"
    CONFIRMED = "confirmed"
    CREDITED = "credited"
    # Confirmed, but worth less than the minimum (with what was carried): the amount is carried, not credited.
    CARRIED = "carried"
    ORPHANED = "orphaned"


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
    amount_usdc_units: int = Field(sa_type=BigInteger)
    status: str = Field(default=DepositStatus.OBSERVED, max_length=16)
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

    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_usdc_deposits_chain_tx_log"),
        CheckConstraint("amount_usdc_units > 0", name="ck_usdc_deposits_amount_positive"),
        # Deposits pending confirmation (status observed, oldest blocks first), and the live ones at or above a
        # reorg's fork point (a few statuses, recent blocks): one index serves both.
        Index("ix_usdc_deposits_chain_status_block", "chain_id", "status", "block_number"),
        Index("ix_usdc_deposits_account", "account_id", "observed_at"),
    )
