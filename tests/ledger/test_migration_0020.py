"""Migration 0020 (the lots' expiry queue; no index of lots naming a column an update changes) goes up and down on
both databases, and fills the queue with every lot whose time is still to be dealt with."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.migrate import current_revision, downgrade, upgrade
from services.ledger import repository as repo
from services.ledger.models import AccountKind, TransactionKind
from services.ledger.system_accounts import SystemAccount

REVISION = "0020"
PREVIOUS = "0019"


def lot_indexes(engine: Engine) -> dict[str | None, tuple[list[Any], str | None]]:
    """Each index of lots: its columns and its predicate (None: a whole-table index)."""
    found: dict[str | None, tuple[list[Any], str | None]] = {}
    for index in inspect(engine).get_indexes("lots"):
        options = index.get("dialect_options", {})
        where = options.get("postgresql_where") or options.get("sqlite_where")
        found[index["name"]] = (list(index["column_names"]), None if where is None else str(where))
    return found


def fillfactor(engine: Engine) -> str | None:
    """The fillfactor set on lots (PostgreSQL; None when the default, or on SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = CAST('lots' AS regclass)")
        ).scalar_one()
    found = [option.split("=", 1)[1] for option in options or [] if option.startswith("fillfactor=")]
    return found[0] if found else None


def add_lot(engine: Engine, account_id: int, n: int, *, expires_in: timedelta, remaining: int, reserved: int) -> int:
    now = utcnow()
    with unit_of_work(engine) as session:
        mint = repo.insert_transaction(
            session,
            kind=TransactionKind.MINT,
            idempotency_key=f"mint:{n}",
            account_id=account_id,
            created_at=now,
            legs=[(SystemAccount.FUNDING_CARD, -10), (account_id, 10)],
        )
        return repo.insert_lot(
            session,
            {
                "account_id": account_id,
                "rail": "card",
                "external_ref": f"cs_{n}",
                "credits": 10,
                "remaining_credits": remaining,
                "reserved_credits": reserved,
                "credited_at": now - timedelta(days=365) + expires_in,
                "expires_at": now + expires_in,
                "mint_transaction_id": mint,
                "details": {},
            },
        )


def test_the_expiry_queue_migration_goes_up_and_down(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, PREVIOUS)
    with unit_of_work(engine) as session:
        account_id = repo.insert_account(session, kind=AccountKind.CUSTOMER, name="c", code=None, created_at=utcnow())
    live = add_lot(engine, account_id, 1, expires_in=timedelta(days=30), remaining=10, reserved=0)
    live_spent = add_lot(engine, account_id, 2, expires_in=timedelta(days=30), remaining=0, reserved=0)
    due = add_lot(engine, account_id, 3, expires_in=-timedelta(days=1), remaining=10, reserved=4)
    add_lot(engine, account_id, 4, expires_in=-timedelta(days=1), remaining=4, reserved=4)  # expired, held
    add_lot(engine, account_id, 5, expires_in=-timedelta(days=2), remaining=0, reserved=0)  # expired long ago
    before = lot_indexes(engine)
    assert before["ix_lots_expiry_queue"][1] is not None

    upgrade(engine, REVISION)
    with unit_of_work(engine) as session:
        queued = session.execute(text("SELECT lot_id, account_id FROM lot_expiry_queue ORDER BY lot_id")).all()
    assert [tuple(row) for row in queued] == [(live, account_id), (live_spent, account_id), (due, account_id)]
    after = lot_indexes(engine)
    assert "ix_lots_expiry_queue" not in after
    assert after["ix_lots_drawable"] == (["account_id", "expires_at", "credited_at", "id"], None)
    assert after["ix_lots_expires"] == (["expires_at", "id"], None)
    assert all(where is None for _, where in after.values())
    assert fillfactor(engine) == ("85" if engine.dialect.name == "postgresql" else None)

    downgrade(engine, PREVIOUS)
    assert current_revision(engine) == PREVIOUS
    assert "lot_expiry_queue" not in inspect(engine).get_table_names()
    assert lot_indexes(engine) == before
    assert fillfactor(engine) is None
    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
