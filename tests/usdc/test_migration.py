"""Migration 0009 up, down and up again on both databases, with rows in the tables it changes."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from services.core.db import unit_of_work
from services.core.migrate import downgrade, upgrade
from services.ledger.accounts import create_customer_account

BEYOND_INT64_UNITS = 2**70 + 3


def _insert_deposit(engine: Engine, account_id: int, log_index: int, amount: int | str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO usdc_deposits (chain_id, tx_hash, log_index, block_number, block_hash, from_address,"
                " to_address, account_id, amount_usdc_units, status, observed_at, deep_reorgs)"
                " VALUES (1, :tx, :log_index, 5, :block, :sender, :to, :account, :amount, 'observed',"
                " '2026-12-01 00:00:00', 0)"
            ),
            {
                "tx": "0x" + "a" * 64,
                "log_index": log_index,
                "block": "0x" + "b" * 64,
                "sender": "0x" + "1" * 40,
                "to": "0x" + "2" * 40,
                "account": account_id,
                "amount": amount,
            },
        )


def _amounts(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT amount_usdc_units FROM usdc_deposits ORDER BY log_index")).scalars()
        return [int(value) for value in rows]


def test_migration_0009_goes_up_down_and_up_keeping_deposits_and_their_account_checks(
    blank_engine: Engine, backend: str
) -> None:
    upgrade(blank_engine, "0008")
    with unit_of_work(blank_engine) as session:
        account_id = create_customer_account(session, name="before 0009")
    _insert_deposit(blank_engine, account_id, 0, 1_234_567)

    upgrade(blank_engine, "0009")
    assert _amounts(blank_engine) == [1_234_567]
    huge = str(BEYOND_INT64_UNITS) if backend == "sqlite" else BEYOND_INT64_UNITS
    _insert_deposit(blank_engine, account_id, 1, huge)
    assert _amounts(blank_engine) == [1_234_567, BEYOND_INT64_UNITS]
    with blank_engine.begin() as conn:
        conn.execute(text("UPDATE usdc_deposits SET status = 'set_aside', set_aside_reason = 'amount_too_large'"))
    # The account checks of migration 0007 survive the table's rebuild (SQLite) or change (PostgreSQL).
    with pytest.raises(DBAPIError, match="names an account that does not exist"):
        _insert_deposit(blank_engine, account_id + 1_000, 2, 5)
    with pytest.raises(DBAPIError, match="without their account"), blank_engine.begin() as conn:
        conn.execute(text("DELETE FROM accounts WHERE id = :id"), {"id": account_id})

    # Down refuses to truncate an amount beyond a bigint; without it, down and up again keep the rest.
    with pytest.raises(RuntimeError, match="beyond a bigint"):
        downgrade(blank_engine, "0008")
    with blank_engine.begin() as conn:
        conn.execute(text("DELETE FROM usdc_deposits WHERE log_index = 1"))
    downgrade(blank_engine, "0008")
    assert _amounts(blank_engine) == [1_234_567]
    upgrade(blank_engine, "0009")
    assert _amounts(blank_engine) == [1_234_567]
    with pytest.raises(DBAPIError, match=r"amount_positive|CHECK constraint"):
        _insert_deposit(blank_engine, account_id, 3, 0)


OLD_AND_NEW_REFERENCES = [
    ("usdc", "deep_reorg", "1:0xaa:0#1", "usdc:1:0xaa:0"),
    ("usdc", "deep_reorg", "1:0xaa:0#2", "usdc:1:0xaa:0#2"),
    ("usdc", "carry_shortfall", "1:0xaa:0#1", "usdc:1:0xaa:0"),
    ("usdc", "reconciliation_missing_in_ledger", "deposit:1:0xbb:3", "usdc:1:0xbb:3"),
    ("usdc", "reconciliation_missing_externally", "deposit:lot:999", "usdc:lot:999"),
    ("card", "reconciliation_missing_in_ledger", "payment:txn_1", "card:txn_1"),
    ("card", "reconciliation_missing_in_ledger", "refund:ch_1", "card:ch_1#refund"),
    ("card", "webhook_processing_failed", "evt_1", "card:evt_1"),
    ("card", "refund_exceeds_purchase", "ch_9:2500", "card:ch_9#2500"),
    ("card", "clawback_exceeds_lot", "refund:77:500:0", "card:purchase:77#refund:77:500:0"),
]


def _references(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT reference FROM finance_exceptions ORDER BY id")).scalars())


def test_migration_0009_rewrites_finance_exception_references_to_one_format_and_back(blank_engine: Engine) -> None:
    upgrade(blank_engine, "0008")
    with blank_engine.begin() as conn:
        for rail, kind, old, _ in OLD_AND_NEW_REFERENCES:
            conn.execute(
                text(
                    "INSERT INTO finance_exceptions (rail, kind, reference, details, status, created_at)"
                    " VALUES (:rail, :kind, :reference, '{}', 'open', '2026-12-01 00:00:00')"
                ),
                {"rail": rail, "kind": kind, "reference": old},
            )
    old_references = [old for _, _, old, _ in OLD_AND_NEW_REFERENCES]
    new_references = [new for _, _, _, new in OLD_AND_NEW_REFERENCES]

    upgrade(blank_engine, "0009")
    assert _references(blank_engine) == new_references
    downgrade(blank_engine, "0008")
    assert _references(blank_engine) == old_references
    upgrade(blank_engine, "0009")
    assert _references(blank_engine) == new_references
