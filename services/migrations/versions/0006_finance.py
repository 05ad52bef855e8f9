"""Finance: the Stripe and chain mirrors, pulls, reconciliation runs and items; exceptions record their action.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_transfer_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("from_address", sa.String(length=42), nullable=False),
        sa.Column("to_address", sa.String(length=42), nullable=False),
        sa.Column("amount_usdc_units", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("scanned_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "tx_hash", "log_index", name="uq_chain_transfer_records_chain_tx_log"),
    )
    with op.batch_alter_table("chain_transfer_records", schema=None) as batch_op:
        batch_op.create_index("ix_chain_transfer_records_chain_block", ["chain_id", "block_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_chain_transfer_records_reference"), ["reference"], unique=False)

    op.create_table(
        "finance_pulls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("window_start", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("window_end", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.String(length=255), nullable=True),
        sa.Column("pages", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("started_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "window_start", "window_end", name="uq_finance_pulls_source_window"),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rail", sa.String(length=32), nullable=False),
        sa.Column("period_start", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("external_records", sa.BigInteger(), nullable=False),
        sa.Column("ledger_records", sa.BigInteger(), nullable=False),
        sa.Column("matched", sa.BigInteger(), nullable=False),
        sa.Column("missing_in_ledger", sa.BigInteger(), nullable=False),
        sa.Column("missing_externally", sa.BigInteger(), nullable=False),
        sa.Column("amount_mismatch", sa.BigInteger(), nullable=False),
        sa.Column("late", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("started_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rail", "period_start", "period_end", name="uq_reconciliation_runs_rail_period"),
    )
    op.create_table(
        "stripe_balance_transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("stripe_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("reporting_category", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=True),
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("fee_cents", sa.BigInteger(), nullable=False),
        sa.Column("net_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("stripe_created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("fetched_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_id"),
    )
    with op.batch_alter_table("stripe_balance_transactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_balance_transactions_charge_id"), ["charge_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stripe_balance_transactions_payment_intent_id"), ["payment_intent_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stripe_balance_transactions_stripe_created_at"), ["stripe_created_at"], unique=False
        )

    op.create_table(
        "stripe_checkout_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("stripe_id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount_total_cents", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("payment_status", sa.String(length=32), nullable=True),
        sa.Column("account_ref", sa.String(length=64), nullable=True),
        sa.Column("stripe_created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("fetched_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_id"),
    )
    with op.batch_alter_table("stripe_checkout_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stripe_checkout_sessions_payment_intent_id"), ["payment_intent_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stripe_checkout_sessions_stripe_created_at"), ["stripe_created_at"], unique=False
        )

    op.create_table(
        "reconciliation_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("external_ref", sa.String(length=255), nullable=True),
        sa.Column("lot_ref", sa.String(length=255), nullable=True),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("external_amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("external_amount_usdc_units", sa.BigInteger(), nullable=True),
        sa.Column("expected_credits", sa.BigInteger(), nullable=True),
        sa.Column("ledger_credits", sa.BigInteger(), nullable=True),
        sa.Column("external_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ledger_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reconciliation_items", schema=None) as batch_op:
        batch_op.create_index("ix_reconciliation_items_run_category", ["run_id", "category", "id"], unique=False)

    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_rail_credited", ["rail", "credited_at"], unique=False)

    with op.batch_alter_table("finance_exceptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("action", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("transaction_id", sa.BigInteger(), nullable=True))
        batch_op.create_foreign_key(
            "fk_finance_exceptions_transaction_id", "ledger_transactions", ["transaction_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_rail_credited")

    with op.batch_alter_table("finance_exceptions", schema=None) as batch_op:
        batch_op.drop_constraint("fk_finance_exceptions_transaction_id", type_="foreignkey")
        batch_op.drop_column("transaction_id")
        batch_op.drop_column("action")

    with op.batch_alter_table("reconciliation_items", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_items_run_category")

    op.drop_table("reconciliation_items")
    with op.batch_alter_table("stripe_checkout_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_checkout_sessions_stripe_created_at"))
        batch_op.drop_index(batch_op.f("ix_stripe_checkout_sessions_payment_intent_id"))

    op.drop_table("stripe_checkout_sessions")
    with op.batch_alter_table("stripe_balance_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_balance_transactions_stripe_created_at"))
        batch_op.drop_index(batch_op.f("ix_stripe_balance_transactions_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_balance_transactions_charge_id"))

    op.drop_table("stripe_balance_transactions")
    op.drop_table("reconciliation_runs")
    op.drop_table("finance_pulls")
    with op.batch_alter_table("chain_transfer_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chain_transfer_records_reference"))
        batch_op.drop_index("ix_chain_transfer_records_chain_block")

    op.drop_table("chain_transfer_records")
