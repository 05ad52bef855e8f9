"""The USDC rail: deposit addresses, chain cursors, recent block hashes, deposits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 04:50:48.901112
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_blocks",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "number"),
    )
    op.create_table(
        "chain_cursors",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("next_block", sa.BigInteger(), nullable=False),
        sa.Column("range_blocks", sa.BigInteger(), nullable=False),
        sa.Column("head_block", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("last_error_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("chain_id"),
    )
    op.create_table(
        "deposit_addresses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("derivation_index", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("carry_usdc_units", sa.BigInteger(), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("carry_usdc_units >= 0", name="ck_deposit_addresses_carry_nonnegative"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "chain_id", name="uq_deposit_addresses_account_chain"),
        sa.UniqueConstraint("chain_id", "address", name="uq_deposit_addresses_chain_address"),
    )
    op.create_table(
        "usdc_deposits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("from_address", sa.String(length=42), nullable=False),
        sa.Column("to_address", sa.String(length=42), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_usdc_units", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("observed_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("credited_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("orphaned_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("carry_in_usdc_units", sa.BigInteger(), nullable=True),
        sa.Column("credits_minted", sa.BigInteger(), nullable=True),
        sa.Column("carry_out_usdc_units", sa.BigInteger(), nullable=True),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("deep_reorgs", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("carry_reversed_usdc_units", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount_usdc_units > 0", name="ck_usdc_deposits_amount_positive"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"],
            ["lots.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_usdc_deposits_chain_tx_log"),
    )
    with op.batch_alter_table("usdc_deposits", schema=None) as batch_op:
        batch_op.create_index("ix_usdc_deposits_account", ["account_id", "observed_at"], unique=False)
        batch_op.create_index(
            "ix_usdc_deposits_chain_status_block", ["chain_id", "status", "block_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("usdc_deposits", schema=None) as batch_op:
        batch_op.drop_index("ix_usdc_deposits_chain_status_block")
        batch_op.drop_index("ix_usdc_deposits_account")

    op.drop_table("usdc_deposits")
    op.drop_table("deposit_addresses")
    op.drop_table("chain_cursors")
    op.drop_table("chain_blocks")
