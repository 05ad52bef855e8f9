"""Alerts: each account's alert settings and the edge-triggered state of its alerts.

- ``alert_settings``: the low-balance threshold (null: off) and whether alert emails are sent, one row per account
  that set them.
- ``alert_states``: one row per (account, kind, subject), unique, armed or fired, with the crossings counted; found
  by (kind, ref_id) when the evaluation asks whether a lot or a budget's period has a state.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_settings",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("low_balance_threshold_credits", sa.BigInteger(), nullable=True),
        sa.Column("email_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "low_balance_threshold_credits IS NULL OR low_balance_threshold_credits > 0",
            name="ck_alert_settings_threshold_positive",
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "alert_states",
        sa.Column("id", services.core.db.BigIntPK, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_key", sa.String(length=100), nullable=False),
        sa.Column("ref_id", sa.BigInteger(), nullable=True),
        sa.Column("period_start", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("armed", sa.Boolean(), nullable=False),
        sa.Column("level_percent", sa.Integer(), nullable=False),
        sa.Column("crossings", sa.Integer(), nullable=False),
        sa.Column("fired_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rearmed_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "kind", "subject_key", name="uq_alert_states_subject"),
    )
    op.create_index("ix_alert_states_kind_ref", "alert_states", ["kind", "ref_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_states_kind_ref", table_name="alert_states")
    op.drop_table("alert_states")
    op.drop_table("alert_settings")
