"""Wallets as identity: wallet links, used request nonces, issued challenges; sessions signed in by a wallet.

- ``wallets``: an EVM address (lowercased, unique) and the customer account it acts for, with how it was linked.
- ``wallet_request_nonces``: the nonces of signed requests already accepted, unique per (address, nonce), purged
  once their timestamp is outside the window.
- ``wallet_challenges``: the nonces issued for Sign-In-With-X messages and link proofs, each used once.
- ``customer_sessions``: a session is created either by a key (admin or platform) or by a wallet's sign-in
  (``wallet_id``), exactly one of the two.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("id", services.core.db.BigIntPK, nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("linked_via", sa.String(length=16), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("linked_via IN ('purchase', 'sign_in', 'admin', 'link')", name="ck_wallets_linked_via"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address", name="uq_wallets_address"),
    )
    op.create_index("ix_wallets_account_id", "wallets", ["account_id"])
    op.create_table(
        "wallet_request_nonces",
        sa.Column("id", services.core.db.BigIntPK, nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("signed_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address", "nonce", name="uq_wallet_request_nonces_address_nonce"),
    )
    op.create_index("ix_wallet_request_nonces_signed_at", "wallet_request_nonces", ["signed_at"])
    op.create_table(
        "wallet_challenges",
        sa.Column("id", services.core.db.BigIntPK, nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("issued_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("purpose IN ('sign_in', 'link')", name="ck_wallet_challenges_purpose"),
        sa.CheckConstraint(
            "(purpose = 'link') = (account_id IS NOT NULL)", name="ck_wallet_challenges_link_names_account"
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nonce", name="uq_wallet_challenges_nonce"),
    )
    op.create_index("ix_wallet_challenges_expires_at", "wallet_challenges", ["expires_at"])
    with op.batch_alter_table("customer_sessions") as batch:
        batch.alter_column("created_by_key_id", existing_type=sa.BigInteger(), nullable=True)
        batch.add_column(sa.Column("wallet_id", sa.BigInteger(), nullable=True))
        batch.create_foreign_key("fk_customer_sessions_wallet_id", "wallets", ["wallet_id"], ["id"])
        batch.create_check_constraint(
            "ck_customer_sessions_one_creator", "(created_by_key_id IS NULL) <> (wallet_id IS NULL)"
        )


def downgrade() -> None:
    # Sessions signed in by a wallet have no key to keep them by: they go.
    op.execute("DELETE FROM customer_sessions WHERE wallet_id IS NOT NULL")
    with op.batch_alter_table("customer_sessions") as batch:
        batch.drop_constraint("ck_customer_sessions_one_creator", type_="check")
        batch.drop_constraint("fk_customer_sessions_wallet_id", type_="foreignkey")
        batch.drop_column("wallet_id")
        batch.alter_column("created_by_key_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_index("ix_wallet_challenges_expires_at", table_name="wallet_challenges")
    op.drop_table("wallet_challenges")
    op.drop_index("ix_wallet_request_nonces_signed_at", table_name="wallet_request_nonces")
    op.drop_table("wallet_request_nonces")
    op.drop_index("ix_wallets_account_id", table_name="wallets")
    op.drop_table("wallets")
