"""Lot expiry reads a queue of its own, and updates of lots become HOT on PostgreSQL.

An update of a row is HOT (heap-only: the new version on the same page, no new index entry) only when no index
names a column it changes, in its key or in its predicate, and the page has room. Two indexes of lots named
``remaining_credits``/``reserved_credits`` in their predicates (``ix_lots_drawable``: ``remaining_credits > 0``;
``ix_lots_expiry_queue``: ``remaining_credits > reserved_credits``), so every expiry, spend and hold wrote a new
entry into each of the six indexes of lots: most of an expiry batch's cost per lot.

- ``ix_lots_drawable`` keeps its columns without the predicate (a draw reads an account's lots from ``now`` on,
  so the lots already past their time are not read either way);
- ``ix_lots_expiry_queue`` becomes ``ix_lots_expires`` (expires_at, id) without a predicate, for the alerts about
  credits expiring soon; the expiry job reads ``lot_expiry_queue`` instead: a lot's row from its mint until the
  batch that deals with its time (it is filled here with the lots whose time is still to come or that are due);
- lots' pages keep 15% of their room for new versions of their rows (``fillfactor``; PostgreSQL only, for the
  pages written from now on).

On PostgreSQL, the check that a statement's new lot movements name rows that exist (migration 0008) looks each
distinct lot, transaction and hold up once: an expiry batch's thousands of movements name one transaction.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.core.db
from services.core.clock import utcnow

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILLFACTOR = 85

# (column, referred table) of each reference of lot movements checked by the statement trigger of migration 0008.
_REFERENCES = (("lot_id", "lots"), ("transaction_id", "ledger_transactions"), ("hold_id", "holds"))


def _references_check(distinct: bool) -> str:
    """The function of migration 0008's trigger, looking each distinct value up once (or, as 0008 did, each row's)."""
    checks = "\n".join(
        f"""
        IF missing IS NULL THEN
            SELECT '{table} ' || m.{column} INTO missing
            FROM {f"(SELECT DISTINCT {column} FROM inserted_movements)" if distinct else "inserted_movements"} AS m
            WHERE m.{column} IS NOT NULL AND NOT EXISTS (SELECT FROM {table} AS r WHERE r.id = m.{column}) LIMIT 1;
        END IF;"""
        for column, table in _REFERENCES
    )
    return f"""
        CREATE OR REPLACE FUNCTION lot_movements_references_exist() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT
        AS $$
        DECLARE
            missing text;
        BEGIN{checks}
            IF missing IS NOT NULL THEN
                RAISE EXCEPTION 'insert on table "lot_movements" names a row that does not exist (%)', missing
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$
        """


def upgrade() -> None:
    op.create_table(
        "lot_expiry_queue",
        sa.Column("expires_at", services.core.db.UTCDateTime(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("expires_at", "lot_id"),
    )
    with op.batch_alter_table("lot_expiry_queue", schema=None) as batch_op:
        batch_op.create_index("ix_lot_expiry_queue_account", ["account_id", "expires_at", "lot_id"], unique=False)
    # Every lot whose time is to come, or that is due now (its unreserved remainder not yet expired).
    lots = sa.table(
        "lots",
        sa.column("id", sa.BigInteger()),
        sa.column("account_id", sa.BigInteger()),
        sa.column("expires_at", services.core.db.UTCDateTime()),
        sa.column("remaining_credits", sa.BigInteger()),
        sa.column("reserved_credits", sa.BigInteger()),
    )
    queue = sa.table(
        "lot_expiry_queue",
        sa.column("expires_at", services.core.db.UTCDateTime()),
        sa.column("lot_id", sa.BigInteger()),
        sa.column("account_id", sa.BigInteger()),
    )
    pending = sa.select(lots.c.expires_at, lots.c.id, lots.c.account_id).where(
        sa.or_(
            lots.c.expires_at > sa.bindparam("now", utcnow(), type_=services.core.db.UTCDateTime()),
            lots.c.remaining_credits > lots.c.reserved_credits,
        )
    )
    op.execute(queue.insert().from_select(["expires_at", "lot_id", "account_id"], pending))

    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_drawable")
        batch_op.drop_index("ix_lots_expiry_queue")
        batch_op.create_index("ix_lots_drawable", ["account_id", "expires_at", "credited_at", "id"], unique=False)
        batch_op.create_index("ix_lots_expires", ["expires_at", "id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE lots SET (fillfactor = {_FILLFACTOR})")
        op.execute(_references_check(distinct=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_references_check(distinct=False))
        op.execute("ALTER TABLE lots RESET (fillfactor)")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_expires")
        batch_op.drop_index("ix_lots_drawable")
        batch_op.create_index(
            "ix_lots_expiry_queue",
            ["expires_at", "id"],
            unique=False,
            sqlite_where=sa.text("remaining_credits > reserved_credits"),
            postgresql_where=sa.text("remaining_credits > reserved_credits"),
        )
        batch_op.create_index(
            "ix_lots_drawable",
            ["account_id", "expires_at", "credited_at", "id"],
            unique=False,
            sqlite_where=sa.text("remaining_credits > 0"),
            postgresql_where=sa.text("remaining_credits > 0"),
        )
    with op.batch_alter_table("lot_expiry_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_lot_expiry_queue_account")
    op.drop_table("lot_expiry_queue")
