"""The card rail (purchases, disputes, clawbacks, the webhook inbox, auto-recharge, sync cursors) and the finance
exceptions queue both rails report into.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DUE = "status IN ('pending', 'failed')"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, services.core.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "finance_exceptions",
        sa.Column("id", ID, nullable=False),
        sa.Column("rail", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("amount_usdc_units", sa.BigInteger(), nullable=True),
        sa.Column("amount_credits", sa.BigInteger(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        _timestamp("resolved_at", nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolution", sa.String(length=2000), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rail", "kind", "reference", name="uq_finance_exceptions_rail_kind_reference"),
    )
    with op.batch_alter_table("finance_exceptions", schema=None) as batch_op:
        batch_op.create_index("ix_finance_exceptions_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "card_customers",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("payment_method_id", sa.String(length=255), nullable=True),
        _timestamp("payment_method_saved_at", nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("stripe_customer_id"),
    )

    op.create_table(
        "card_purchases",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pack", sa.String(length=32), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("save_card", sa.Boolean(), nullable=False),
        sa.Column("crossing", sa.BigInteger(), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_session_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.String(length=2048), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("amount_paid_cents", sa.BigInteger(), nullable=True),
        sa.Column("refunded_cents", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("stripe_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("completed_at", nullable=True),
        sa.CheckConstraint("amount_credits > 0", name="ck_card_purchases_credits_positive"),
        sa.CheckConstraint("amount_cents > 0", name="ck_card_purchases_cents_positive"),
        sa.CheckConstraint("refunded_cents >= 0", name="ck_card_purchases_refunded_nonnegative"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_card_purchases_account_idempotency_key"),
        sa.UniqueConstraint("checkout_session_id", name="uq_card_purchases_checkout_session_id"),
        sa.UniqueConstraint("payment_intent_id", name="uq_card_purchases_payment_intent_id"),
    )
    with op.batch_alter_table("card_purchases", schema=None) as batch_op:
        batch_op.create_index("ix_card_purchases_account_created", ["account_id", "created_at"], unique=False)
        batch_op.create_index("ix_card_purchases_status_created", ["status", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_card_purchases_charge_id"), ["charge_id"], unique=False)

    op.create_table(
        "card_disputes",
        sa.Column("id", ID, nullable=False),
        sa.Column("dispute_id", sa.String(length=255), nullable=False),
        sa.Column("purchase_id", sa.BigInteger(), nullable=False),
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("clawed_back_credits", sa.BigInteger(), nullable=False),
        sa.Column("reinstated_credits", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("closed_at", nullable=True),
        sa.ForeignKeyConstraint(["purchase_id"], ["card_purchases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dispute_id"),
    )
    with op.batch_alter_table("card_disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_card_disputes_purchase_id"), ["purchase_id"], unique=False)

    op.create_table(
        "card_clawbacks",
        sa.Column("id", ID, nullable=False),
        sa.Column("purchase_id", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"]),
        sa.ForeignKeyConstraint(["purchase_id"], ["card_purchases.id"]),
        sa.ForeignKeyConstraint(["transaction_id"], ["ledger_transactions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "reference", name="uq_card_clawbacks_kind_reference"),
    )
    with op.batch_alter_table("card_clawbacks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_card_clawbacks_purchase_id"), ["purchase_id"], unique=False)

    op.create_table(
        "stripe_webhook_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("api_version", sa.String(length=64), nullable=True),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        _timestamp("stripe_created_at"),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _timestamp("next_attempt_at", nullable=True),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        _timestamp("received_at"),
        _timestamp("processed_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("stripe_webhook_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_webhook_events_object_id"), ["object_id"], unique=False)
        batch_op.create_index(
            "ix_stripe_webhook_events_due",
            ["next_attempt_at", "id"],
            unique=False,
            sqlite_where=sa.text(DUE),
            postgresql_where=sa.text(DUE),
        )
        batch_op.create_index("ix_stripe_webhook_events_status_received", ["status", "received_at"], unique=False)

    op.create_table(
        "card_auto_recharge",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("threshold_credits", sa.BigInteger(), nullable=False),
        sa.Column("pack", sa.String(length=32), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("armed", sa.Boolean(), nullable=False),
        sa.Column("crossings", sa.BigInteger(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_purchase_id", sa.BigInteger(), nullable=True),
        sa.Column("last_failure_code", sa.String(length=64), nullable=True),
        sa.Column("last_failure_message", sa.String(length=500), nullable=True),
        _timestamp("last_failure_at", nullable=True),
        sa.Column("disabled_reason", sa.String(length=64), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("threshold_credits >= 0", name="ck_card_auto_recharge_threshold_nonnegative"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["last_purchase_id"], ["card_purchases.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    with op.batch_alter_table("card_auto_recharge", schema=None) as batch_op:
        batch_op.create_index(
            "ix_card_auto_recharge_enabled",
            ["account_id"],
            unique=False,
            sqlite_where=sa.text("enabled"),
            postgresql_where=sa.text("enabled"),
        )

    op.create_table(
        "card_sync_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_unix", sa.BigInteger(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("card_sync_cursors")
    with op.batch_alter_table("card_auto_recharge", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_card_auto_recharge_enabled", sqlite_where=sa.text("enabled"), postgresql_where=sa.text("enabled")
        )
    op.drop_table("card_auto_recharge")
    with op.batch_alter_table("stripe_webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_webhook_events_status_received")
        batch_op.drop_index("ix_stripe_webhook_events_due", sqlite_where=sa.text(DUE), postgresql_where=sa.text(DUE))
        batch_op.drop_index(batch_op.f("ix_stripe_webhook_events_object_id"))
    op.drop_table("stripe_webhook_events")
    with op.batch_alter_table("card_clawbacks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_clawbacks_purchase_id"))
    op.drop_table("card_clawbacks")
    with op.batch_alter_table("card_disputes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_disputes_purchase_id"))
    op.drop_table("card_disputes")
    with op.batch_alter_table("card_purchases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_purchases_charge_id"))
        batch_op.drop_index("ix_card_purchases_status_created")
        batch_op.drop_index("ix_card_purchases_account_created")
    op.drop_table("card_purchases")
    op.drop_table("card_customers")
    with op.batch_alter_table("finance_exceptions", schema=None) as batch_op:
        batch_op.drop_index("ix_finance_exceptions_status_created")
    op.drop_table("finance_exceptions")
