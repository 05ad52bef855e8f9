"""Deposits that cannot be credited, against a real anvil: set aside with their reason and a finance exception,
without holding back the deposits after them or stopping the listener."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from chain.devchain import LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.db import make_engine, unit_of_work
from services.review.schemas import ExceptionOut
from services.review.service import list_exceptions, usdc_reference
from services.usdc.crediting import DEPOSIT_SET_ASIDE
from services.usdc.flows import listener
from tests.conftest import PostgresTestDatabase
from tests.worker.proxy import TcpProxy

from .conftest import CHAIN_ID, Rail, chain_settings_for, rail_settings
from .support import send_transfer

# 2 * 10^12 credits: twice the default max_amount_credits (10^12), yet a 64-bit integer of base units.
TOO_MANY_UNITS_TO_MINT = 2 * 10**16
BEYOND_INT64_UNITS = 2**64 + 7


def _set_aside_exceptions(usdc: Rail) -> list[ExceptionOut]:
    with unit_of_work(usdc.engine) as session:
        return [e for e in list_exceptions(session, rail="usdc") if e.kind == DEPOSIT_SET_ASIDE]


def test_a_deposit_too_large_to_mint_is_set_aside_and_the_deposits_after_it_are_credited(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    token.mint(token.wallet.address, TOO_MANY_UNITS_TO_MINT)
    account_id, address = usdc.customer()
    send_transfer(token, address, TOO_MANY_UNITS_TO_MINT)
    send_transfer(token, address, 5_000_000)
    mine(rpc, usdc.chain.confirmations)

    usdc.settle(rpc)

    huge, small = usdc.deposits(account_id)
    assert (huge.status, huge.set_aside_reason, huge.lot_id) == ("set_aside", "amount_too_large", None)
    assert (small.status, small.credits_minted) == ("credited", 500)
    assert usdc.balance(account_id).total_credits == 500
    [exception] = _set_aside_exceptions(usdc)
    assert exception.reference == usdc_reference(CHAIN_ID, huge.tx_hash, huge.log_index)
    assert exception.account_id == account_id
    assert exception.details["amount_usdc_units"] == str(TOO_MANY_UNITS_TO_MINT)
    assert exception.details["reason"] == "amount_too_large"

    # Later runs neither retry it nor raise the exception again.
    mine(rpc, 2)
    usdc.settle(rpc)
    assert [d.status for d in usdc.deposits(account_id)] == ["set_aside", "credited"]
    assert len(_set_aside_exceptions(usdc)) == 1
    usdc.assert_invariants()


def test_a_transfer_beyond_a_64_bit_integer_is_stored_exactly_set_aside_and_the_listener_goes_on(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    token.mint(token.wallet.address, BEYOND_INT64_UNITS)
    account_id, address = usdc.customer()
    send_transfer(token, address, BEYOND_INT64_UNITS)
    usdc.poll_until_caught_up(rpc)
    send_transfer(token, address, 3_000_000)
    mine(rpc, usdc.chain.confirmations)

    usdc.settle(rpc)

    huge, small = usdc.deposits(account_id)
    assert huge.amount_usdc_units == BEYOND_INT64_UNITS
    assert (huge.status, huge.set_aside_reason) == ("set_aside", "amount_too_large")
    assert (small.status, small.credits_minted) == ("credited", 300)
    assert usdc.cursor().last_error is None
    assert usdc.cursor().next_block == rpc.block_number() + 1
    [exception] = _set_aside_exceptions(usdc)
    assert exception.amount_usdc_units is None
    assert exception.details["amount_usdc_units"] == str(BEYOND_INT64_UNITS)
    usdc.assert_invariants()


def test_a_transient_database_error_while_crediting_fails_the_batch_and_sets_nothing_aside(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id, address = usdc.customer()
    send_transfer(token, address, 2_000_000)
    mine(rpc, usdc.chain.confirmations)
    usdc.poll_until_caught_up(rpc)

    def lock_timeout(*_args: object, **_kwargs: object) -> None:
        # An error after which the connection lives on: setting the deposit aside would succeed, and be wrong.
        raise OperationalError("UPDATE", None, Exception("canceling statement due to lock timeout"))

    monkeypatch.setattr(listener, "credit_locked_deposit", lock_timeout)
    with pytest.raises(OperationalError):
        usdc.confirm(rpc)
    assert [d.status for d in usdc.deposits(account_id)] == ["observed"]
    assert _set_aside_exceptions(usdc) == []

    monkeypatch.undo()
    assert usdc.confirm(rpc) == 1
    assert [d.status for d in usdc.deposits(account_id)] == ["credited"]


def test_the_database_going_away_while_crediting_fails_the_batch_and_sets_nothing_aside(
    pg_engine: Engine, postgres_database: PostgresTestDatabase, rpc: ChainRpc, token: LocalToken
) -> None:
    chain = chain_settings_for(rpc, token)
    usdc = Rail(pg_engine, rail_settings(pg_engine, chain))
    account_id, address = usdc.customer()
    send_transfer(token, address, 2_000_000)
    mine(rpc, chain.confirmations)
    usdc.poll_until_caught_up(rpc)
    target = make_url(postgres_database.url)

    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        proxied = make_engine(
            target.set(host="127.0.0.1", port=proxy.port), schema=postgres_database.schema, pool_size=2
        )

        # The database goes away as the deposit's credit begins (its savepoint), inside the per-deposit handling.
        def cut_at_the_savepoint(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.startswith("SAVEPOINT"):
                proxy.cut()

        event.listen(proxied, "before_cursor_execute", cut_at_the_savepoint)
        try:
            with pytest.raises(OperationalError):
                listener.confirm_deposits(proxied, chain, rpc)
            event.remove(proxied, "before_cursor_execute", cut_at_the_savepoint)
            assert [d.status for d in usdc.deposits(account_id)] == ["observed"]
            assert _set_aside_exceptions(usdc) == []

            proxy.restore()
            assert listener.confirm_deposits(proxied, chain, rpc) == 1
        finally:
            proxied.dispose()
    assert [d.status for d in usdc.deposits(account_id)] == ["credited"]
    usdc.assert_invariants()


def test_a_deposit_set_aside_whose_block_leaves_the_chain_is_orphaned(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    token.mint(token.wallet.address, TOO_MANY_UNITS_TO_MINT)
    account_id, address = usdc.customer()
    send_transfer(token, address, TOO_MANY_UNITS_TO_MINT)
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    assert [d.status for d in usdc.deposits(account_id)] == ["set_aside"]

    reorg(rpc, usdc.chain.confirmations + 1, [])  # deeper than the confirmations: the transfer is gone
    token.wallet.sync_nonce()
    mine(rpc, 2)
    usdc.settle(rpc)

    [deposit] = usdc.deposits(account_id)
    assert (deposit.status, deposit.lot_id) == ("orphaned", None)
    assert usdc.balance(account_id).total_credits == 0
    usdc.assert_invariants()
