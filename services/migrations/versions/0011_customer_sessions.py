"""Customer sessions: short-lived, renewable, revocable tokens the platform asks for on a customer's behalf, so the
customer's browser never holds an API key.

- ``customer_sessions``: the token's public prefix (unique: it finds the row) and the SHA-256 digest of the whole
  token, the account it acts for, the key that created it, where the page links back to, its lifetime, when it was
  last renewed, when it expires, the latest it may ever expire, and when it was revoked.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("created_by_key_id", sa.BigInteger(), nullable=False),
        sa.Column("return_url", sa.String(length=2048), nullable=True),
        sa.Column("lifetime_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("max_expires_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["created_by_key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
    )
    with op.batch_alter_table("customer_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_sessions_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customer_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_sessions_account_id"))
    op.drop_table("customer_sessions")
