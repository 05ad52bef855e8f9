"""USDC deposits: who recorded each one (``via``).

- ``usdc_deposits.via``: ``listener`` (the chain's poll found it), ``claim`` (the payer submitted its transaction
  hash) or ``x402`` (our own x402 settlement), set by whoever recorded or credited it first; an x402 settlement marks
  its transfer as such whoever recorded it. Deposits recorded before this revision were all the listener's.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usdc_deposits", sa.Column("via", sa.String(length=16), nullable=True))
    op.execute("UPDATE usdc_deposits SET via = 'listener' WHERE via IS NULL")


def downgrade() -> None:
    # A plain DROP COLUMN on both databases (SQLite has it since 3.35): rebuilding the table would lose its account
    # checks (triggers of migration 0007).
    op.execute("ALTER TABLE usdc_deposits DROP COLUMN via")
