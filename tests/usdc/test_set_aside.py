"""Deposits that cannot be credited, against a real anvil: set aside with their reason and a finance exception,
without holding back the deposits after them or stopping the listener."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from chain.devchain import LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.db import unit_of_work
from services.finance.exceptions import ExceptionView, list_exceptions, usdc_reference
from services.usdc import listener
from services.usdc.crediting import DEPOSIT_SET_ASIDE

from .conftest import CHAIN_ID, Rail
from .support import send_transfer

# 2 * 10^12 credits: twice the default max_amount_credits (10^12), yet a 64-bit integer of base units.
TOO_MANY_UNITS_TO_MINT = 2 * 10**16
BEYOND_INT64_UNITS = 2**64 + 7


def _set_aside_exceptions(usdc: Rail) -> list[ExceptionView]:
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


def test_a_database_error_while_crediting_fails_the_batch_and_sets_nothing_aside(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id, address = usdc.customer()
    send_transfer(token, address, 2_000_000)
    mine(rpc, usdc.chain.confirmations)
    usdc.poll_until_caught_up(rpc)

    def database_gone(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT", None, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(listener, "credit_locked_deposit", database_gone)
    with pytest.raises(OperationalError):
        usdc.confirm(rpc)
    assert [d.status for d in usdc.deposits(account_id)] == ["observed"]
    assert _set_aside_exceptions(usdc) == []

    monkeypatch.undo()
    assert usdc.confirm(rpc) == 1
    assert [d.status for d in usdc.deposits(account_id)] == ["credited"]


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
