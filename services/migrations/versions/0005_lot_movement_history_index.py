"""A lot's movements indexed by (lot_id, id): its history in order and its latest movement without a scan.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.create_index("ix_lot_movements_lot_id_id", ["lot_id", "id"], unique=False)
        batch_op.drop_index("ix_lot_movements_lot_id")


def downgrade() -> None:
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.create_index("ix_lot_movements_lot_id", ["lot_id"], unique=False)
        batch_op.drop_index("ix_lot_movements_lot_id_id")
