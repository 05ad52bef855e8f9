"""The bulk insert of observed deposits: one COPY on PostgreSQL, one executemany elsewhere, and values a node should
never send (a tab, a line break, a backslash) stored as they are rather than shifting columns."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from chain.logs import TransferLog
from services.core.clock import utcnow
from services.core.db import table_of, unit_of_work
from services.ledger.accounts import create_customer_account
from services.ledger.models import Account
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


# --- the account reference (triggers, not a foreign key: migration 0007) ------------------------------------


def test_deposits_naming_a_missing_account_are_refused_whole(engine: Engine) -> None:
    now = utcnow()
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="customer")
    good, bad = "0x" + "e" * 40, "0x" + "f" * 40
    transfers = [
        transfer("0x" + "1" * 64, 0, good),
        transfer("0x" + "1" * 64, 1, bad),
        transfer("0x" + "2" * 64, 0, good),
    ]
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        repo.insert_observed(session, CHAIN_ID, transfers, {good: account_id, bad: account_id + 1_000}, now)
    with unit_of_work(engine) as session:
        assert repo.find_deposits(session, CHAIN_ID, [(t.tx_hash, t.log_index) for t in transfers]) == {}
        assert repo.insert_observed(session, CHAIN_ID, transfers, {good: account_id, bad: account_id}, now) == 3


def test_a_deposit_moved_to_a_missing_account_is_refused(engine: Engine) -> None:
    now = utcnow()
    with unit_of_work(engine) as session:
        first = create_customer_account(session, name="first")
        second = create_customer_account(session, name="second")
    to = "0x" + "e" * 40
    with unit_of_work(engine) as session:
        repo.insert_observed(session, CHAIN_ID, [transfer("0x" + "1" * 64, 0, to)], {to: first}, now)
        (deposit,) = repo.find_deposits(session, CHAIN_ID, [("0x" + "1" * 64, 0)]).values()
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        repo.update_deposit(session, deposit.id, account_id=second + 1_000)
    with unit_of_work(engine) as session:
        repo.update_deposit(session, deposit.id, account_id=second)
        repo.update_deposit(session, deposit.id, status="confirmed")  # other changes are not checked again
        changed = repo.get_deposit(session, deposit.id)
        assert changed is not None
        assert changed.account_id == second


def test_an_account_with_deposits_can_neither_go_nor_change_its_id(engine: Engine) -> None:
    accounts = table_of(Account)
    with unit_of_work(engine) as session:
        kept = create_customer_account(session, name="with deposits")
        unused = create_customer_account(session, name="without")
    to = "0x" + "e" * 40
    with unit_of_work(engine) as session:
        repo.insert_observed(session, CHAIN_ID, [transfer("0x" + "1" * 64, 0, to)], {to: kept}, utcnow())
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        session.execute(delete(accounts).where(accounts.c.id == kept))
    with pytest.raises(IntegrityError), unit_of_work(engine) as session:
        session.execute(update(accounts).where(accounts.c.id == kept).values(id=unused + 1_000))
    with unit_of_work(engine) as session:
        session.execute(update(accounts).where(accounts.c.id == kept).values(name="renamed"))
        session.execute(delete(accounts).where(accounts.c.id == unused))
        assert session.execute(select(accounts.c.id).where(accounts.c.id.in_([kept, unused]))).scalars().all() == [kept]


def test_storing_deposits_locks_their_accounts_against_deletion_until_commit(pg_engine: Engine) -> None:
    """As a foreign key's check does (FOR KEY SHARE): an account cannot be deleted under deposits not yet
    committed, and no deposit can be stored for an account whose deletion is not yet committed."""
    accounts = table_of(Account)
    with unit_of_work(pg_engine) as session:
        account_id = create_customer_account(session, name="customer")
    to = "0x" + "e" * 40

    def store(tx_hash: str) -> Callable[[Session], object]:
        return lambda session: repo.insert_observed(
            session, CHAIN_ID, [transfer(tx_hash, 0, to)], {to: account_id}, utcnow()
        )

    def delete_account(session: Session) -> object:
        return session.execute(delete(accounts).where(accounts.c.id == account_id))

    with unit_of_work(pg_engine) as storing:
        store("0x" + "1" * 64)(storing)
        with pytest.raises(DBAPIError, match="lock timeout"):
            briefly(pg_engine, delete_account)
    with unit_of_work(pg_engine) as deleting:
        deleting.execute(text("DELETE FROM usdc_deposits"))
        delete_account(deleting)
        with pytest.raises(DBAPIError, match="lock timeout"):
            briefly(pg_engine, store("0x" + "2" * 64))


def briefly(engine: Engine, work: Callable[[Session], object]) -> None:
    """``work`` in a unit of work that gives up waiting for a lock after 50 ms."""
    with unit_of_work(engine) as session:
        session.execute(text("SET LOCAL lock_timeout = '50ms'"))
        work(session)


def test_advancing_the_cursor_reads_where_it_was_and_the_stored_deposits_and_writes_the_rest(engine: Engine) -> None:
    """The reads and writes of storing a range but the deposits (one pipelined round trip on PostgreSQL): the
    same outcome on both databases."""
    now = utcnow()
    to = "0x" + "e" * 40
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="customer")
        repo.insert_cursor(session, CHAIN_ID, 100, 10, now)
        repo.update_cursor(session, CHAIN_ID, last_error="RuntimeError: boom", last_error_at=now)
        repo.store_blocks(session, CHAIN_ID, {n: "0x" + f"{n:064x}" for n in range(90, 100)}, keep_blocks=64)
        repo.insert_observed(session, CHAIN_ID, [transfer("0x" + "1" * 64, 3, to)], {to: account_id}, now)
    new_hashes = {n: "0x" + f"{n + 1_000:064x}" for n in range(98, 103)}
    with unit_of_work(engine) as session:
        was_at, found = repo.advance_cursor(
            session,
            CHAIN_ID,
            tx_hashes=["0x" + "1" * 64, "0x" + "2" * 64, "0x" + "1" * 64],
            new_hashes=new_hashes,
            keep_blocks=8,
            values={
                "next_block": 103,
                "range_blocks": 20,
                "head_block": 110,
                "last_error": None,
                "last_error_at": None,
            },
        )
    assert was_at == 100
    assert list(found) == [("0x" + "1" * 64, 3)]
    (row,) = found.values()
    assert (row.status, row.block_hash, row.account_id) == ("observed", "0x" + "b" * 64, account_id)
    with unit_of_work(engine) as session:
        cursor = repo.get_cursor(session, CHAIN_ID)
        assert cursor is not None
        assert (cursor.next_block, cursor.range_blocks, cursor.head_block) == (103, 20, 110)
        assert (cursor.last_error, cursor.last_error_at) == (None, None)
        # Stored from block 98 on replaced; all but the newest 8 block numbers (95..102) forgotten.
        assert repo.recent_blocks(session, CHAIN_ID) == {
            **{n: "0x" + f"{n:064x}" for n in range(95, 98)},
            **new_hashes,
        }
        assert repo.advance_cursor(
            session, 999, tx_hashes=[], new_hashes={}, keep_blocks=8, values={"next_block": 1}
        ) == (None, {})
