"""USDC deposits at the rail's edges: any uint256 amount, and deposits set aside with their reason.

- ``usdc_deposits.amount_usdc_units`` holds what a Transfer carried, whatever it is: NUMERIC(78, 0) on PostgreSQL;
  on SQLite decimal text (its INTEGER stops at 2^63 - 1, and its NUMERIC affinity would turn a larger number into
  a float). A transfer beyond a bigint no longer stops the listener.
- ``usdc_deposits.set_aside_reason``: why a deposit is set aside (status ``set_aside``), when crediting it is
  impossible (an amount beyond what one mint may be, ...); it no longer holds back the deposits after it.

- ``finance_exceptions.reference``: one format per rail, whoever raised the exception (the listener, crediting,
  reconciliation, the card rail): ``usdc:<chain id>:<tx hash>:<log index>`` and ``card:<Stripe object id>``, with a
  ``#<qualifier>`` telling apart several exceptions of one kind about the same item (a repeated deep reorg ``#2``,
  a refund amount, ``#refund`` / ``#dispute`` for what reconciliation found given back on a charge). Existing rows
  are rewritten (their old reference kept in ``details.reference_before_0009``, which a downgrade puts back).

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


_OLD_REFERENCE = "reference_before_0009"
_exceptions = sa.table(
    "finance_exceptions",
    sa.column("id", sa.BigInteger()),
    sa.column("rail", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("reference", sa.String()),
    sa.column("details", sa.JSON()),
)


def _lot_reference(connection: sa.Connection, lot_id: str) -> str | None:
    if not lot_id.isdigit():
        return None
    found = connection.execute(sa.text("SELECT external_ref FROM lots WHERE id = :id"), {"id": int(lot_id)}).scalar()
    return None if found is None else str(found)


def _purchase_object(
    connection: sa.Connection, *, purchase_id: str | None = None, dispute_id: str | None = None
) -> str:
    """The Stripe object a card purchase's exceptions are about (as services.card.refunds names it)."""
    if dispute_id is not None:
        found = connection.execute(
            sa.text("SELECT purchase_id FROM card_disputes WHERE dispute_id = :id"), {"id": dispute_id}
        ).scalar()
        purchase_id = None if found is None else str(found)
    if purchase_id is None or not purchase_id.isdigit():
        return f"purchase:{purchase_id}"
    row = connection.execute(
        sa.text("SELECT charge_id, checkout_session_id, payment_intent_id FROM card_purchases WHERE id = :id"),
        {"id": int(purchase_id)},
    ).first()
    if row is None:
        return f"purchase:{purchase_id}"
    return str(row[0] or row[1] or row[2] or f"purchase:{purchase_id}")


def _new_reference(connection: sa.Connection, rail: str, kind: str, old: str) -> str:
    """The reference of the new format for an exception raised before it."""
    if old.startswith(("usdc:", "card:")):
        return old
    if kind.startswith("reconciliation_"):
        item_kind, _, named = old.partition(":")
        if named.startswith("lot:"):
            named = _lot_reference(connection, named[4:]) or named
        if item_kind == "deposit":
            return f"usdc:{named}"
        return f"card:{named}" if item_kind == "payment" else f"card:{named}#{item_kind}"
    if rail == "usdc":
        named, _, occurrence = old.partition("#")
        return f"usdc:{named}" if occurrence in ("", "1") else f"usdc:{named}#{occurrence}"
    if kind == "clawback_exceeds_lot":
        claw, _, rest = old.partition(":")
        if claw == "dispute":
            return f"card:{_purchase_object(connection, dispute_id=rest)}#{old}"
        return f"card:{_purchase_object(connection, purchase_id=rest.split(':', 1)[0])}#{old}"
    if kind == "refund_exceeds_purchase" and ":" in old:
        charge, _, refunded = old.rpartition(":")
        return f"card:{charge}#{refunded}"
    return f"card:{old}"


def _old_reference(rail: str, kind: str, new: str, details: dict[str, object]) -> str:
    """The reference as it was before 0009 (kept in the details), or made back from the new one."""
    kept = details.get(_OLD_REFERENCE)
    if isinstance(kept, str):
        return kept
    named, _, qualifier = new.split(":", 1)[-1].partition("#")
    if kind.startswith("reconciliation_"):
        return f"deposit:{named}" if rail == "usdc" else f"{qualifier or 'payment'}:{named}"
    if rail == "usdc":
        return f"{named}#{qualifier or 1}"
    if kind == "refund_exceeds_purchase" and qualifier:
        return f"{named}:{qualifier}"
    return qualifier if kind == "clawback_exceeds_lot" and qualifier else named


def _rewrite_references(*, upgrading: bool) -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            _exceptions.c.id, _exceptions.c.rail, _exceptions.c.kind, _exceptions.c.reference, _exceptions.c.details
        )
    ).all()
    taken = {(row.rail, row.kind, row.reference) for row in rows}
    for row in rows:
        details = dict(row.details or {})
        if upgrading:
            reference = _new_reference(connection, row.rail, row.kind, row.reference)
            if reference != row.reference:
                details[_OLD_REFERENCE] = row.reference
        else:
            reference = _old_reference(row.rail, row.kind, row.reference, details)
            details.pop(_OLD_REFERENCE, None)
        if reference == row.reference:
            continue
        if (row.rail, row.kind, reference) in taken:
            reference = f"{reference}#exception:{row.id}"  # two old references of one item: both kept
        taken.discard((row.rail, row.kind, row.reference))
        taken.add((row.rail, row.kind, reference))
        connection.execute(
            sa.update(_exceptions).where(_exceptions.c.id == row.id).values(reference=reference[:255], details=details)
        )


def upgrade() -> None:
    _rewrite_references(upgrading=True)
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
    _rewrite_references(upgrading=False)
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
