"""The ledger (accounts, journal, lots, holds, budgets) and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:30:28.138888
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

# Posted journal rows are never edited or removed: corrections are new transactions.
IMMUTABLE_TABLES = ("ledger_transactions", "ledger_entries", "lot_movements")

SYSTEM_ACCOUNTS = [
    (1, "funding:card", "Card funding (Stripe)"),
    (2, "revenue:usage", "Usage revenue"),
    (3, "breakage", "Breakage (expired credits)"),
    (4, "clawbacks", "Clawbacks (refunds and disputes)"),
    (5, "promotions", "Promotional grants"),
    (6, "adjustments", "Manual adjustments"),
]


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("debt_credits", sa.BigInteger(), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("debt_credits >= 0", name="ck_accounts_debt_nonnegative"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_account_id"), ["account_id"], unique=False)

    op.create_table(
        "budgets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_ref", sa.String(length=100), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("limit_credits", sa.BigInteger(), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("limit_credits >= 0", name="ck_budgets_limit_nonnegative"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budgets_account_id"), ["account_id"], unique=False)

    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_transactions_account_created", ["account_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_transactions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_transactions_kind"), ["kind"], unique=False)

    op.create_table(
        "budget_usage",
        sa.Column("budget_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_credits", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
        ),
        sa.PrimaryKeyConstraint("budget_id", "period_start"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), nullable=True),
        sa.Column("project", sa.String(length=100), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("captured_credits", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("capture_transaction_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount_credits > 0", name="ck_holds_amount_positive"),
        sa.CheckConstraint(
            "captured_credits >= 0 AND captured_credits <= amount_credits", name="ck_holds_capture_within"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
        ),
        sa.ForeignKeyConstraint(
            ["capture_transaction_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_holds_account_idempotency_key"),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index("ix_holds_account_created", ["account_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_holds_active_expiry",
            ["expires_at", "id"],
            unique=False,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_credits <> 0", name="ck_ledger_entries_nonzero"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_entries_account_created", ["account_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_entries_transaction_id"), ["transaction_id"], unique=False)

    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("rail", sa.String(length=16), nullable=False),
        sa.Column("external_ref", sa.String(length=255), nullable=False),
        sa.Column("cost_basis_cents", sa.BigInteger(), nullable=True),
        sa.Column("cost_basis_usdc_units", sa.BigInteger(), nullable=True),
        sa.Column("promotional", sa.Boolean(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("remaining_credits", sa.BigInteger(), nullable=False),
        sa.Column("reserved_credits", sa.BigInteger(), nullable=False),
        sa.Column("expired_credits", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back_credits", sa.BigInteger(), nullable=False),
        sa.Column("credited_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("mint_transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.CheckConstraint("clawed_back_credits >= 0", name="ck_lots_clawed_back_nonnegative"),
        sa.CheckConstraint("expired_credits >= 0", name="ck_lots_expired_nonnegative"),
        sa.CheckConstraint("credits > 0", name="ck_lots_credits_positive"),
        sa.CheckConstraint(
            "reserved_credits >= 0 AND reserved_credits <= remaining_credits", name="ck_lots_reserved_within"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["mint_transaction_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rail", "external_ref", name="uq_lots_rail_external_ref"),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_account_credited", ["account_id", "credited_at"], unique=False)
        batch_op.create_index(
            "ix_lots_drawable",
            ["account_id", "expires_at", "credited_at", "id"],
            unique=False,
            sqlite_where=sa.text("remaining_credits > 0"),
            postgresql_where=sa.text("remaining_credits > 0"),
        )
        batch_op.create_index(
            "ix_lots_expiry_queue",
            ["expires_at", "id"],
            unique=False,
            sqlite_where=sa.text("remaining_credits > reserved_credits"),
            postgresql_where=sa.text("remaining_credits > reserved_credits"),
        )

    op.create_table(
        "hold_allocations",
        sa.Column("hold_id", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_credits > 0", name="ck_hold_allocations_positive"),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["holds.id"],
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"],
            ["lots.id"],
        ),
        sa.PrimaryKeyConstraint("hold_id", "lot_id"),
    )
    op.create_table(
        "hold_budget_charges",
        sa.Column("hold_id", sa.BigInteger(), nullable=False),
        sa.Column("budget_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["holds.id"],
        ),
        sa.PrimaryKeyConstraint("hold_id", "budget_id"),
    )
    op.create_table(
        "lot_movements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_credits <> 0", name="ck_lot_movements_nonzero"),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["holds.id"],
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"],
            ["lots.id"],
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lot_movements_lot_id"), ["lot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lot_movements_transaction_id"), ["transaction_id"], unique=False)

    _make_immutable()
    _seed_system_accounts()


def _make_immutable() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION creditrail_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
            END $$
            """
        )
        for table in IMMUTABLE_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION creditrail_refuse_change()"
            )
    else:
        for table in IMMUTABLE_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END"
                )


def _seed_system_accounts() -> None:
    accounts = sa.table(
        "accounts",
        sa.column("id", sa.BigInteger),
        sa.column("kind", sa.String),
        sa.column("code", sa.String),
        sa.column("name", sa.String),
        sa.column("debt_credits", sa.BigInteger),
        sa.column("created_at", services.core.db.UTCDateTime()),
    )
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    op.bulk_insert(
        accounts,
        [
            {"id": i, "kind": "system", "code": code, "name": name, "debt_credits": 0, "created_at": now}
            for i, code, name in SYSTEM_ACCOUNTS
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT MAX(id) FROM accounts))")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in IMMUTABLE_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        op.execute("DROP FUNCTION IF EXISTS creditrail_refuse_change()")
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_movements_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_lot_movements_lot_id"))

    op.drop_table("lot_movements")
    op.drop_table("hold_budget_charges")
    op.drop_table("hold_allocations")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_lots_expiry_queue",
            sqlite_where=sa.text("remaining_credits > reserved_credits"),
            postgresql_where=sa.text("remaining_credits > reserved_credits"),
        )
        batch_op.drop_index(
            "ix_lots_drawable",
            sqlite_where=sa.text("remaining_credits > 0"),
            postgresql_where=sa.text("remaining_credits > 0"),
        )
        batch_op.drop_index("ix_lots_account_credited")

    op.drop_table("lots")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_transaction_id"))
        batch_op.drop_index("ix_ledger_entries_account_created")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_holds_active_expiry",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index("ix_holds_account_created")

    op.drop_table("holds")
    op.drop_table("budget_usage")
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_kind"))
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_created_at"))
        batch_op.drop_index("ix_ledger_transactions_account_created")

    op.drop_table("ledger_transactions")
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budgets_account_id"))

    op.drop_table("budgets")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_account_id"))

    op.drop_table("api_keys")
    op.drop_table("accounts")
