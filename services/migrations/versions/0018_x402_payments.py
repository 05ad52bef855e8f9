"""x402 payments: every signed payment accepted for settlement, keyed by its authorization (chain, payer, nonce)
and by its payment-identifier, each unique.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "x402_payments",
        sa.Column("id", services.core.db.BigIntPK, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("payer", sa.String(length=42), nullable=False),
        sa.Column("auth_nonce", sa.String(length=66), nullable=False),
        sa.Column("asset", sa.String(length=42), nullable=False),
        sa.Column("pay_to", sa.String(length=42), nullable=False),
        sa.Column("amount_usdc_units", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("valid_before", sa.BigInteger(), nullable=False),
        sa.Column("payment_identifier", sa.String(length=128), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("x402_version", sa.BigInteger(), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("deposit_id", sa.BigInteger(), nullable=True),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_usdc_units > 0", name="ck_x402_payments_amount_positive"),
        sa.CheckConstraint("status IN ('settling', 'settled', 'failed')", name="ck_x402_payments_status"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "payer", "auth_nonce", name="uq_x402_payments_authorization"),
        sa.UniqueConstraint("payment_identifier", name="uq_x402_payments_identifier"),
    )
    op.create_index("ix_x402_payments_status_created", "x402_payments", ["status", "created_at"])
    op.create_index("ix_x402_payments_account", "x402_payments", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_x402_payments_account", table_name="x402_payments")
    op.drop_index("ix_x402_payments_status_created", table_name="x402_payments")
    op.drop_table("x402_payments")
