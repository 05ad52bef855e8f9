"""A lot movement names its lot, its journal transaction and (for a capture) its hold, and what it names stays.

The checks are the database's (migration 0008: once per statement on PostgreSQL, per row on SQLite), in place of
foreign keys: a movement naming a row that does not exist is refused and nothing of its statement is written; lots
and holds are never deleted nor renumbered.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from services.core.db import unit_of_work
from services.ledger import repository as repo
from services.ledger.holds import create_hold
from services.ledger.models import MovementKind
from tests.ledger.support import T0, mint_card, new_account

movements = repo.movements
MISSING = 10_000_000


def movement(lot_id: int, transaction_id: int, hold_id: int | None = None) -> dict[str, Any]:
    return {
        "lot_id": lot_id,
        "transaction_id": transaction_id,
        "kind": MovementKind.CAPTURE if hold_id else MovementKind.SPEND,
        "amount_credits": -1,
        "hold_id": hold_id,
        "created_at": T0,
    }


def movement_count(engine: Engine) -> int:
    with unit_of_work(engine) as session:
        return int(session.execute(select(func.count()).select_from(movements)).scalar_one())


@pytest.mark.parametrize("missing", ["lot_id", "transaction_id", "hold_id"])
def test_a_movement_naming_a_row_that_does_not_exist_is_refused_with_its_whole_statement(
    engine: Engine, missing: str
) -> None:
    account_id = new_account(engine)
    minted = mint_card(engine, account_id, 1_000)
    with unit_of_work(engine) as session:
        hold_id = create_hold(session, account_id=account_id, amount_credits=10, idempotency_key="h", now=T0).id
    before = movement_count(engine)
    good = movement(minted.lot_id, minted.transaction_id, hold_id)
    bad = {**good, missing: MISSING}
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        session.execute(insert(movements), [good, bad, good])
    assert movement_count(engine) == before
    with unit_of_work(engine) as session:  # the same rows naming what exists are taken
        session.execute(insert(movements), [good, movement(minted.lot_id, minted.transaction_id)])
    assert movement_count(engine) == before + 2


@pytest.mark.parametrize("table", ["lots", "holds"])
def test_lots_and_holds_are_never_deleted_nor_renumbered(engine: Engine, table: str) -> None:
    account_id = new_account(engine)
    minted = mint_card(engine, account_id, 1_000)
    with unit_of_work(engine) as session:
        hold_id = create_hold(session, account_id=account_id, amount_credits=10, idempotency_key="h", now=T0).id
    target = repo.lots if table == "lots" else repo.holds
    row_id = minted.lot_id if table == "lots" else hold_id
    with pytest.raises(IntegrityError, match="never deleted nor renumbered"), unit_of_work(engine) as session:
        session.execute(delete(target).where(target.c.id == row_id))
    # (A renumbered lot may first meet another table's foreign key to it: either refuses.)
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        session.execute(update(target).where(target.c.id == row_id).values(id=MISSING))
    with unit_of_work(engine) as session:
        # Other changes go through, an id set to itself included.
        column = target.c.details if table == "lots" else target.c.description
        value: Any = {"checked": True} if table == "lots" else "checked"
        session.execute(update(target).where(target.c.id == row_id).values({target.c.id: row_id, column: value}))
        assert session.execute(select(column).where(target.c.id == row_id)).scalar_one() == value
