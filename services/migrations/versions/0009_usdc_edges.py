"""USDC deposits at the rail's edges: any uint256 amount, and deposits set aside with their reason.

- ``usdc_deposits.amount_usdc_units`` holds what a Transfer carried, whatever it is: NUMERIC(78, 0) on PostgreSQL;
  on SQLite decimal text (its INTEGER stops at 2^63 - 1, and its NUMERIC affinity would turn a larger number into
  a float). A transfer beyond a bigint no longer stops the listener.
- ``usdc_deposits.set_aside_reason``: why a deposit is set aside (status ``set_aside``), when crediting it is
  impossible (an amount beyond what one mint may be, ...); it no longer holds back the deposits after it.

On SQLite, changing the column's type rebuilds the table, so its account-check triggers (migration 0007) are made
again. Downgrading refuses an amount a bigint cannot hold rather than truncate it.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_MAX = 2**63 - 1
_DEPOSIT_MESSAGE = 'insert or update on table "usdc_deposits" names an account that does not exist'
_ACCOUNT_MESSAGE = 'update or delete on table "accounts" leaves deposits of table "usdc_deposits" without their account'
# The triggers that migration 0007 made on SQLite: a rebuild of the table drops those on it, and those on accounts
# naming it would stop the rebuild's rename, so all are dropped first and made again after.
_SQLITE_DEPOSIT_TRIGGERS = [
    f"""
    CREATE TRIGGER usdc_deposits_account_on_insert BEFORE INSERT ON usdc_deposits
    WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id)
    BEGIN SELECT RAISE(ABORT, '{_DEPOSIT_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER usdc_deposits_account_on_update BEFORE UPDATE OF account_id ON usdc_deposits
    WHEN NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id)
    BEGIN SELECT RAISE(ABORT, '{_DEPOSIT_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER accounts_keep_usdc_deposits_on_delete BEFORE DELETE ON accounts
    WHEN EXISTS (SELECT 1 FROM usdc_deposits WHERE account_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, '{_ACCOUNT_MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER accounts_keep_usdc_deposits_on_update BEFORE UPDATE OF id ON accounts
    WHEN NEW.id IS NOT OLD.id AND EXISTS (SELECT 1 FROM usdc_deposits WHERE account_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, '{_ACCOUNT_MESSAGE}'); END
    """,
]
_SQLITE_DEPOSIT_TRIGGER_NAMES = (
    "usdc_deposits_account_on_insert",
    "usdc_deposits_account_on_update",
    "accounts_keep_usdc_deposits_on_delete",
    "accounts_keep_usdc_deposits_on_update",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "usdc_deposits",
            "amount_usdc_units",
            type_=sa.Numeric(78, 0),
            existing_type=sa.BigInteger(),
            existing_nullable=False,
        )
        op.add_column("usdc_deposits", sa.Column("set_aside_reason", sa.String(length=255), nullable=True))
    else:
        _sqlite_rebuild(sa.String(length=78), sa.BigInteger(), add_reason=True)


def downgrade() -> None:
    too_large = (
        op.get_bind()
        .execute(
            sa.text("SELECT count(*) FROM usdc_deposits WHERE CAST(amount_usdc_units AS NUMERIC) > :most"),
            {"most": _BIGINT_MAX},
        )
        .scalar()
    )
    if too_large:
        raise RuntimeError(f"{too_large} USDC deposits hold amounts beyond a bigint: cannot downgrade below 0009")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("usdc_deposits", "set_aside_reason")
        op.alter_column(
            "usdc_deposits",
            "amount_usdc_units",
            type_=sa.BigInteger(),
            existing_type=sa.Numeric(78, 0),
            existing_nullable=False,
        )
    else:
        _sqlite_rebuild(sa.BigInteger(), sa.String(length=78), add_reason=False)


def _sqlite_rebuild(
    amount_type: sa.types.TypeEngine[Any], old_type: sa.types.TypeEngine[Any], *, add_reason: bool
) -> None:
    for name in _SQLITE_DEPOSIT_TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("usdc_deposits") as batch_op:
        batch_op.alter_column("amount_usdc_units", type_=amount_type, existing_type=old_type, existing_nullable=False)
        if add_reason:
            batch_op.add_column(sa.Column("set_aside_reason", sa.String(length=255), nullable=True))
        else:
            batch_op.drop_column("set_aside_reason")
    for statement in _SQLITE_DEPOSIT_TRIGGERS:
        op.execute(statement)
