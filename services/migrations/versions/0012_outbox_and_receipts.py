"""Receipts: an email address on accounts, and the outbox messages are delivered from.

- ``accounts.email`` / ``accounts.email_verified``: where receipts and notices go (none without an address).
- ``outbox_messages``: every message written in the transaction of the change it reports, unique by its dedupe key
  and by its Message-ID, found by the delivery job through (status, next_attempt_at).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE (no table copy on SQLite: the accounts table is referenced by triggers).
    op.add_column("accounts", sa.Column("email", sa.String(length=320), nullable=True))
    op.add_column("accounts", sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "outbox_messages",
        sa.Column("id", services.core.db.BigIntPK, nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_outbox_messages_account_id", "outbox_messages", ["account_id"])
    op.create_index("ix_outbox_messages_status_next_attempt_at", "outbox_messages", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_status_next_attempt_at", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_account_id", table_name="outbox_messages")
    op.drop_table("outbox_messages")
    op.drop_column("accounts", "email_verified")
    op.drop_column("accounts", "email")
