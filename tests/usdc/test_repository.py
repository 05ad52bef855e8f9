"""The bulk insert of observed deposits: one COPY on PostgreSQL, one executemany elsewhere, and values a node should
never send (a tab, a line break, a backslash) stored as they are rather than shifting columns."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from chain.logs import TransferLog
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger.accounts import create_customer_account
from services.usdc import repository as repo

from .conftest import CHAIN_ID


def transfer(tx_hash: str, log_index: int, to: str, value_units: int = 1_000_000) -> TransferLog:
    return TransferLog(
        CHAIN_ID, 100, "0x" + "b" * 64, tx_hash, log_index, "0x" + "c" * 40, "0x" + "d" * 40, to, value_units
    )


@pytest.mark.parametrize(
    "odd_tx_hash",
    ["0x" + "a" * 64, "0xab\tcd", "0xab\ncd\\n", "0xab\\tcd\r"],
    ids=["hex", "tab", "newline-backslash", "escaped-tab-cr"],
)
def test_observed_deposits_are_stored_exactly_as_given(engine: Engine, odd_tx_hash: str) -> None:
    now = utcnow()
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="customer")
    to = "0x" + "e" * 40
    transfers = [
        transfer(odd_tx_hash, 0, to),
        transfer(odd_tx_hash, 1, to, 2_500_000),
        transfer("0x" + "f" * 64, 7, to),
    ]
    with unit_of_work(engine) as session:
        assert repo.insert_observed(session, CHAIN_ID, transfers, {to: account_id}, now) == 3
    with unit_of_work(engine) as session:
        stored = repo.find_deposits(session, CHAIN_ID, [(t.tx_hash, t.log_index) for t in transfers])
    assert sorted(stored) == sorted((t.tx_hash, t.log_index) for t in transfers)
    for t in transfers:
        row = stored[(t.tx_hash, t.log_index)]
        assert (row.block_hash, row.from_address, row.to_address) == (t.block_hash, t.from_address, t.to_address)
        assert (row.account_id, row.amount_usdc_units, row.status) == (account_id, t.value_units, "observed")
        assert row.observed_at == now

    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        repo.insert_observed(session, CHAIN_ID, transfers[:1], {to: account_id}, now)
