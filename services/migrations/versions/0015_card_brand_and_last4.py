"""The card a purchase was paid with, as Stripe describes it, for receipts and the purchase history.

- ``card_purchases.card_brand``: Stripe's brand code of the card (``visa``, ``mastercard``, ``amex`` ...), from the
  charge's ``payment_method_details.card.brand``; null until known (or when Stripe could not be asked).
- ``card_purchases.card_last4``: the card number's last four digits, from the same place.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("card_purchases", sa.Column("card_brand", sa.String(length=32), nullable=True))
    op.add_column("card_purchases", sa.Column("card_last4", sa.String(length=4), nullable=True))


def downgrade() -> None:
    op.drop_column("card_purchases", "card_last4")
    op.drop_column("card_purchases", "card_brand")
