"""Migration 0019 (who recorded each deposit) goes up and down on both databases, keeping the deposits."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.migrate import current_revision, downgrade, upgrade
from services.ledger.accounts import create_customer_account

REVISION = "0019"


def _insert_deposit(engine: Engine, account_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO usdc_deposits (chain_id, tx_hash, log_index, block_number, block_hash, from_address,"
                " to_address, account_id, amount_usdc_units, status, observed_at, deep_reorgs)"
                " VALUES (1, :tx, 0, 5, :block, :sender, :to, :account, 1000000, 'observed', '2026-12-01 00:00:00', 0)"
            ),
            {
                "tx": "0x" + "a" * 64,
                "block": "0x" + "b" * 64,
                "sender": "0x" + "1" * 40,
                "to": "0x" + "2" * 40,
                "account": account_id,
            },
        )


def test_deposits_recorded_before_are_the_listeners_and_the_column_goes_away_again(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, "0016")
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="before 0019")
    _insert_deposit(engine, account_id)

    upgrade(engine, REVISION)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT via FROM usdc_deposits")).scalar_one() == "listener"
    downgrade(engine, "0016")
    assert current_revision(engine) == "0016"
    assert "via" not in {column["name"] for column in inspect(engine).get_columns("usdc_deposits")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM usdc_deposits")).scalar_one() == 1
    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
