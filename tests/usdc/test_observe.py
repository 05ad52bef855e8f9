"""Observing one transaction on anvil, on both databases: recorded as the listener records, credited once the
confirmations are reached (or at once with ``credit_now``), once between the observer and the listener."""

from __future__ import annotations

import pytest

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger import repository as ledger_repo
from services.ledger.models import Rail as LedgerRail
from services.review.service import list_exceptions
from services.usdc.crediting import deposit_reference
from services.usdc.errors import InvalidTransactionHash
from services.usdc.flows.observe import (
    ObservedStatus,
    ObservedTransaction,
    TransactionStatus,
    observe_transaction,
)
from tests.chain.conftest import random_address

from .conftest import CHAIN_ID, Rail
from .support import send_reverting_transfer, send_transfer


def _observe(usdc: Rail, rpc: ChainRpc, tx_hash: str, *, credit_now: bool = False) -> ObservedTransaction:
    return observe_transaction(usdc.engine, usdc.chain, rpc, tx_hash, now=utcnow(), credit_now=credit_now)


def test_a_transfer_is_recorded_at_once_and_credited_when_its_confirmations_are_reached(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = usdc.customer()
    signed, block = send_transfer(token, address, 12_345_678)

    seen = _observe(usdc, rpc, signed.tx_hash)
    assert (seen.status, seen.block_number, seen.chain_id) == (TransactionStatus.INCLUDED, block, CHAIN_ID)
    [deposit] = seen.deposits
    assert (deposit.status, deposit.account_id, deposit.amount_usdc_units, deposit.credits) == (
        ObservedStatus.PENDING,
        account_id,
        12_345_678,
        1234,
    )
    assert deposit.confirmations_to_come == usdc.chain.confirmations
    assert (deposit.lot_id, deposit.via, deposit.credited_now) == (None, "claim", False)
    [row] = usdc.deposits(account_id)
    assert (row.status, row.via, row.block_number, row.tx_hash) == ("observed", "claim", block, signed.tx_hash)
    assert usdc.balance(account_id).total_credits == 0

    mine(rpc, usdc.chain.confirmations - 1)
    assert _observe(usdc, rpc, signed.tx_hash).deposits[0].confirmations_to_come == 1
    mine(rpc, 1)
    seen = _observe(usdc, rpc, signed.tx_hash)
    [deposit] = seen.deposits
    assert (deposit.status, deposit.credits, deposit.credited_now, deposit.confirmations_to_come) == (
        ObservedStatus.CREDITED,
        1234,
        True,
        0,
    )
    assert usdc.balance(account_id).total_credits == 1234
    with unit_of_work(usdc.engine) as session:
        lot = ledger_repo.find_lot_by_ref(session, LedgerRail.USDC, deposit_reference(CHAIN_ID, signed.tx_hash, 0))
        assert lot is not None
        assert lot.id == deposit.lot_id

    # Observed again, or found by the listener afterwards: nothing more.
    again = _observe(usdc, rpc, signed.tx_hash)
    assert again.deposits[0].credited_now is False
    assert again.deposits[0].lot_id == deposit.lot_id
    usdc.settle(rpc)
    [row] = usdc.deposits(account_id)
    assert (row.status, row.via, row.lot_id) == ("credited", "claim", deposit.lot_id)
    assert usdc.balance(account_id).total_credits == 1234
    usdc.assert_invariants()


def test_credit_now_credits_a_successful_transfer_at_once(usdc: Rail, rpc: ChainRpc, token: LocalToken) -> None:
    account_id, address = usdc.customer()
    signed, _ = send_transfer(token, address, 5_000_000)

    seen = _observe(usdc, rpc, signed.tx_hash, credit_now=True)
    [deposit] = seen.deposits
    assert (deposit.status, deposit.credits, deposit.credited_now, deposit.via) == (
        ObservedStatus.CREDITED,
        500,
        True,
        "x402",
    )
    assert deposit.lot_id is not None
    assert usdc.balance(account_id).total_credits == 500

    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [row] = usdc.deposits(account_id)
    assert (row.status, row.lot_id, row.via) == ("credited", deposit.lot_id, "x402")
    assert usdc.balance(account_id).total_credits == 500
    usdc.assert_invariants()


def test_the_listener_first_then_the_observer_records_and_credits_once(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = usdc.customer()
    signed, _ = send_transfer(token, address, 3_000_000)
    usdc.poll_until_caught_up(rpc)
    [before] = usdc.deposits(account_id)
    assert before.via == "listener"

    seen = _observe(usdc, rpc, signed.tx_hash)
    assert [d.deposit_id for d in seen.deposits] == [before.id]
    assert seen.deposits[0].via == "listener"
    mine(rpc, usdc.chain.confirmations)
    usdc.confirm(rpc)
    again = _observe(usdc, rpc, signed.tx_hash)
    assert (again.deposits[0].status, again.deposits[0].credited_now) == (ObservedStatus.CREDITED, False)
    assert len(usdc.deposits()) == 1
    assert usdc.balance(account_id).total_credits == 300

    # An x402 settlement marks its transfer as such, whoever recorded it.
    assert _observe(usdc, rpc, signed.tx_hash, credit_now=True).deposits[0].via == "x402"
    usdc.assert_invariants()


def test_unknown_reverted_and_foreign_transactions_record_nothing(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, other_token: LocalToken
) -> None:
    _, address = usdc.customer()
    unknown = _observe(usdc, rpc, "0x" + "ab" * 32)
    assert (unknown.status, unknown.deposits, unknown.block_number) == (TransactionStatus.NOT_FOUND, (), None)

    reverted = _observe(usdc, rpc, send_reverting_transfer(token, address))
    assert reverted.status == TransactionStatus.REVERTED
    assert reverted.block_number is not None

    for receipt in (
        other_token.transfer(address, 5_000_000),  # another token
        token.transfer(random_address(), 5_000_000),  # nobody's deposit address
        token.transfer(address, 0),  # nothing
    ):
        seen = _observe(usdc, rpc, receipt["transactionHash"], credit_now=True)
        assert (seen.status, seen.is_deposit) == (TransactionStatus.INCLUDED, False)
    assert usdc.deposits() == []

    for bad in ("0x1234", "not a hash", "0x" + "g" * 64):
        with pytest.raises(InvalidTransactionHash):
            _observe(usdc, rpc, bad)


def test_a_transaction_with_several_transfers_records_those_to_our_addresses(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    first, first_address = usdc.customer("first")
    second, second_address = usdc.customer("second")
    receipt = token.transfer_many([first_address, random_address(), second_address], 2_000_000)
    mine(rpc, usdc.chain.confirmations)

    seen = _observe(usdc, rpc, receipt["transactionHash"])
    assert [(d.account_id, d.status, d.credited_now) for d in seen.deposits] == [
        (first, ObservedStatus.CREDITED, True),
        (second, ObservedStatus.CREDITED, True),
    ]
    assert usdc.balance(first).total_credits == usdc.balance(second).total_credits == 200
    usdc.settle(rpc)
    assert len(usdc.deposits()) == 2
    usdc.assert_invariants()


def test_a_reorg_dropping_a_transfer_credited_at_once_is_clawed_back_by_the_listener(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    usdc.poll_until_caught_up(rpc)  # the listener is at the head, and has not scanned the transfer's block
    signed, block = send_transfer(token, address, 7_000_000)
    [deposit] = _observe(usdc, rpc, signed.tx_hash, credit_now=True).deposits
    assert deposit.status == ObservedStatus.CREDITED
    assert usdc.balance(account_id).total_credits == 700

    reorg(rpc, 1, [])  # the transfer's block is replaced; the transfer is gone
    wallet.sync_nonce()
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)

    [row] = usdc.deposits(account_id)
    assert (row.status, row.deep_reorgs, row.lot_id, row.block_number) == ("orphaned", 1, deposit.lot_id, block)
    assert usdc.balance(account_id).total_credits == 0
    with unit_of_work(usdc.engine) as session:
        [exception] = list_exceptions(session)
    assert (exception.kind, exception.reference) == ("deep_reorg", f"usdc:{CHAIN_ID}:{signed.tx_hash}:0")
    # Observed again: the node knows no such transaction any more.
    assert _observe(usdc, rpc, signed.tx_hash).status == TransactionStatus.NOT_FOUND
    usdc.assert_invariants()


def test_a_transfer_credited_at_once_that_a_reorg_moves_keeps_its_one_lot(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    usdc.poll_until_caught_up(rpc)
    signed, block = send_transfer(token, address, 4_000_000)
    [deposit] = _observe(usdc, rpc, signed.tx_hash, credit_now=True).deposits
    mine(rpc, 1)

    reorg(rpc, 2, [(signed, 1)])  # replaced from the transfer's block on; the transfer lands one block later
    wallet.sync_nonce()
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)

    [row] = usdc.deposits(account_id)
    assert (row.status, row.block_number, row.lot_id) == ("credited", block + 1, deposit.lot_id)
    assert usdc.balance(account_id).total_credits == 400
    usdc.assert_invariants()


def test_a_deep_reorg_of_a_transfer_credited_after_its_confirmations_is_clawed_back(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    usdc.poll_until_caught_up(rpc)
    signed, _ = send_transfer(token, address, 2_000_000)
    mine(rpc, usdc.chain.confirmations)
    [deposit] = _observe(usdc, rpc, signed.tx_hash).deposits
    assert deposit.status == ObservedStatus.CREDITED
    usdc.poll_until_caught_up(rpc)  # the listener finds it credited already

    reorg(rpc, usdc.chain.confirmations + 1, [])
    wallet.sync_nonce()
    mine(rpc, 2)
    usdc.settle(rpc)
    [row] = usdc.deposits(account_id)
    assert (row.status, row.deep_reorgs) == ("orphaned", 1)
    assert usdc.balance(account_id).total_credits == 0
    with unit_of_work(usdc.engine) as session:
        assert [e.kind for e in list_exceptions(session)] == ["deep_reorg"]
    usdc.assert_invariants()
