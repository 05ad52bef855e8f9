"""Crediting against a real anvil: sub-credit remainders and small deposits carried, and reorgs deeper than the
confirmations after crediting (clawback, finance exception, reinstatement on re-inclusion)."""

from __future__ import annotations

from typing import Any

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.logs import TransferLog
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger import repository as ledger_repo
from services.ledger.spending import spend
from services.review.service import list_exceptions
from services.usdc import repository as repo
from services.usdc.crediting import credit_deposit, undo_credited_deposit

from .conftest import CHAIN_ID, Rail
from .support import conservation, send_transfer


def test_dust_and_deposits_below_the_minimum_are_carried_to_the_next_deposit(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    assert usdc.chain.min_deposit_usdc_units == 1_000_000
    account_id, address = usdc.customer()
    steps = [
        # amount, status, credits, carry after
        (400_000, "carried", 0, 400_000),  # below the minimum
        (700_000, "credited", 110, 0),  # with the carry: 1.10 USDC
        (1_234_567, "credited", 123, 4_567),  # a sub-credit remainder
        (5_433, "carried", 0, 10_000),  # a whole credit's worth with the carry, but below the minimum
        (2_000_000, "credited", 201, 0),
    ]
    for amount, status, credits, carry in steps:
        send_transfer(token, address, amount)
        mine(rpc, usdc.chain.confirmations)
        usdc.settle(rpc)
        deposit = usdc.deposits(account_id)[-1]
        assert (deposit.amount_usdc_units, deposit.status, deposit.credits_minted) == (amount, status, credits)
        assert deposit.carry_out_usdc_units == carry
        assert usdc.carry(account_id) == carry

    deposits = usdc.deposits(account_id)
    assert all(conservation(d) for d in deposits)
    assert [d.carry_in_usdc_units for d in deposits] == [0, 400_000, 0, 4_567, 10_000]
    assert [d.lot_id is None for d in deposits] == [True, False, False, True, False]
    total_credits = sum(d.credits_minted for d in deposits)
    assert total_credits * 10_000 + usdc.carry(account_id) == sum(amount for amount, *_ in steps)
    assert usdc.balance(account_id).total_credits == total_credits == 434
    usdc.assert_invariants()


def test_a_deposit_worth_less_than_a_credit_is_carried_even_under_a_tiny_minimum(
    make_rail: Any, rpc: ChainRpc, token: LocalToken
) -> None:
    usdc: Rail = make_rail(min_deposit_usdc_units=1)
    account_id, address = usdc.customer()
    for amount in (9_999, 1):
        send_transfer(token, address, amount)
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    first, second = usdc.deposits(account_id)
    assert (first.status, first.carry_out_usdc_units) == ("carried", 9_999)
    assert (second.status, second.credits_minted, second.carry_out_usdc_units) == ("credited", 1, 0)
    assert all(conservation(d) for d in (first, second))
    usdc.assert_invariants()


def test_a_reorg_deeper_than_the_confirmations_after_crediting_claws_back_and_raises_a_finance_exception(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    _, block = send_transfer(token, address, 12_000_000)
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [deposit] = usdc.deposits(account_id)
    assert deposit.status == "credited"
    assert deposit.credits_minted == 1_200
    with unit_of_work(usdc.engine) as session:
        spend(session, account_id=account_id, amount_credits=200, idempotency_key="tool-call-1")

    reorg(rpc, usdc.chain.confirmations + 1, [])  # deeper than the confirmations: the transfer is gone
    wallet.sync_nonce()
    mine(rpc, 1)
    outcomes = usdc.poll_until_caught_up(rpc)
    assert outcomes[0].rewound_to == block
    usdc.confirm(rpc)

    [undone] = usdc.deposits(account_id)
    assert undone.status == "orphaned"
    assert undone.orphaned_at is not None
    balance = usdc.balance(account_id)
    assert (balance.total_credits, balance.debt_credits) == (-200, 200), "the spent part became debt"
    with unit_of_work(usdc.engine) as session:
        [exception] = list_exceptions(session)
        lot = ledger_repo.get_lot(session, deposit.lot_id)
    assert (exception.rail, exception.kind, exception.status) == ("usdc", "deep_reorg", "open")
    assert (exception.account_id, exception.amount_usdc_units, exception.amount_credits) == (
        account_id,
        12_000_000,
        1_200,
    )
    assert exception.details["credits_clawed_back"] == 1_200
    assert exception.details["debt_credits"] == 200
    assert deposit.tx_hash in exception.reference
    assert lot is not None
    assert (lot.clawed_back_credits, lot.remaining_credits) == (1_200, 0)

    # Polling and confirming again neither claws back twice nor raises the exception again.
    mine(rpc, 2)
    usdc.settle(rpc)
    with unit_of_work(usdc.engine) as session:
        assert len(list_exceptions(session)) == 1
    assert usdc.balance(account_id).total_credits == -200
    usdc.assert_invariants()


def test_a_deep_reorg_that_re_includes_the_transfer_reinstates_the_same_lot(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    signed, block = send_transfer(token, address, 12_345_678)
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [credited] = usdc.deposits(account_id)
    assert credited.status == "credited"
    assert usdc.carry(account_id) == 5_678

    depth = usdc.chain.confirmations + 1
    reorg(rpc, depth, [(signed, depth - 1)])  # the transfer comes back, in the last replaced block
    wallet.sync_nonce()
    usdc.poll_until_caught_up(rpc)
    [moved] = usdc.deposits(account_id)
    assert (moved.status, moved.block_number) == ("observed", block + depth - 1)
    assert usdc.balance(account_id).total_credits == 0, "clawed back until it is deep enough again"
    assert usdc.carry(account_id) == 0

    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [again] = usdc.deposits(account_id)
    assert (again.status, again.lot_id, again.credits_minted) == ("credited", credited.lot_id, 1_234)
    assert usdc.balance(account_id).total_credits == 1_234
    assert usdc.carry(account_id) == 5_678
    with unit_of_work(usdc.engine) as session:
        lots = ledger_repo.lots_by_id(session, [credited.lot_id])
        assert lots[credited.lot_id].clawed_back_credits == 0
        assert [e.kind for e in list_exceptions(session)] == ["deep_reorg"]
    usdc.assert_invariants()


def test_a_chain_flipping_between_forks_claws_back_and_reinstates_each_time(usdc: Rail) -> None:
    """Forks A, B, then A again (the same block hash comes back), with the carry used by a later deposit: every
    undo claws back and every re-inclusion reinstates, exactly, and each is its own finance exception."""
    account_id, address = usdc.customer()
    hash_a, hash_b = "0x" + "a" * 64, "0x" + "b" * 64
    sender, token = "0x" + "f" * 40, usdc.chain.usdc_address.lower()
    first = TransferLog(CHAIN_ID, 10, hash_a, "0x" + "1" * 64, 0, token, sender, address, 12_345_678)
    second = TransferLog(CHAIN_ID, 11, "0x" + "c" * 64, "0x" + "2" * 64, 0, token, sender, address, 1_004_322)
    now = utcnow()

    def credit(deposit_id: int) -> None:
        with unit_of_work(usdc.engine) as session:
            deposit = repo.get_deposit(session, deposit_id)
            assert deposit is not None
            credit_deposit(session, deposit, now=now, min_deposit_usdc_units=1_000_000)

    def undo(deposit_id: int) -> None:
        with unit_of_work(usdc.engine) as session:
            deposit = repo.get_deposit(session, deposit_id)
            assert deposit is not None
            undo_credited_deposit(session, deposit, now=now, reason="reorg")

    def seen_at(deposit_id: int, block_hash: str) -> None:
        with unit_of_work(usdc.engine) as session:
            repo.update_deposit(session, deposit_id, status="observed", block_hash=block_hash, orphaned_at=None)

    with unit_of_work(usdc.engine) as session:
        repo.insert_observed(session, CHAIN_ID, [first, second], {address: account_id}, now)
    first_id, second_id = (d.id for d in usdc.deposits(account_id))
    credit(first_id)
    credit(second_id)  # uses the first's 5,678 carried units
    assert (usdc.balance(account_id).total_credits, usdc.carry(account_id)) == (1_335, 0)

    for fork in (hash_b, hash_a):
        undo(first_id)
        assert usdc.balance(account_id).total_credits == 101
        usdc.assert_invariants()
        seen_at(first_id, fork)
        credit(first_id)
        assert (usdc.balance(account_id).total_credits, usdc.carry(account_id)) == (1_335, 0)
        usdc.assert_invariants()
    undo(first_id)
    assert (usdc.balance(account_id).total_credits, usdc.carry(account_id)) == (101, 0)

    [first_row, second_row] = usdc.deposits(account_id)
    assert (first_row.status, first_row.deep_reorgs) == ("orphaned", 3)
    assert all(conservation(d) for d in (first_row, second_row))
    with unit_of_work(usdc.engine) as session:
        exceptions = list_exceptions(session, kind="deep_reorg")
        lot = ledger_repo.get_lot(session, first_row.lot_id)
    assert lot is not None
    assert len(exceptions) == 3
    assert [e.details["carry_shortfall_usdc_units"] for e in exceptions] == [5_678, 5_678, 5_678]
    assert lot.clawed_back_credits == 1_234
    usdc.assert_invariants()
