"""The worker's job health.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_health",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.Column("last_started_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_finished_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_succeeded_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_failed_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("last_items", sa.BigInteger(), nullable=False),
        sa.Column("last_batches", sa.BigInteger(), nullable=False),
        sa.Column("last_duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("total_runs", sa.BigInteger(), nullable=False),
        sa.Column("total_failures", sa.BigInteger(), nullable=False),
        sa.Column("total_items", sa.BigInteger(), nullable=False),
        sa.Column("consecutive_failures", sa.BigInteger(), nullable=False),
        sa.Column("retry_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", services.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job"),
    )


def downgrade() -> None:
    op.drop_table("job_health")
