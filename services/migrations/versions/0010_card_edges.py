"""The card rail's edges: when a purchase's Checkout Session stops being payable, and the purchase an inbox event
touched.

- ``card_purchases.checkout_expires_at``: the session's ``expires_at`` as Stripe reported it. The sync job expires
  an open purchase some grace after it (Stripe's own ``checkout.session.expired`` may never arrive), indexed with
  the status so the job finds them without a scan.
- ``stripe_webhook_events.purchase_id``: the purchase processing the event touched, for operators looking an event
  up (no foreign key, as for the inbox's other references: purchases are never deleted).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "card_purchases",
        sa.Column("checkout_expires_at", services.core.db.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_card_purchases_status_checkout_expires_at", "card_purchases", ["status", "checkout_expires_at"])
    op.add_column("stripe_webhook_events", sa.Column("purchase_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("stripe_webhook_events", "purchase_id")
    op.drop_index("ix_card_purchases_status_checkout_expires_at", table_name="card_purchases")
    op.drop_column("card_purchases", "checkout_expires_at")
