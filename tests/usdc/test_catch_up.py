"""Catching up over many polls (the poll job's loop): every log once, no gap, and a failure or a reorg in the middle
of the run."""

from __future__ import annotations

import threading
from itertools import pairwise
from typing import Any

import pytest

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.usdc import repository as usdc_repo
from services.usdc import tasks
from services.usdc.flows.listener import PollOutcome, catch_up, poll_chain
from tests.chain.helpers import RangeLimitedRpc

from .conftest import Rail
from .support import HookedRpc, send_transfer


def poll_one_call_at_a_time(usdc: Rail, rpc: Any) -> list[PollOutcome]:
    """Polls of one eth_getLogs call each, until caught up."""
    outcomes = [poll_chain(usdc.engine, usdc.chain, rpc, now=utcnow(), max_calls=1)]
    while not outcomes[-1].caught_up:
        outcomes.append(poll_chain(usdc.engine, usdc.chain, rpc, now=utcnow(), max_calls=1))
    return outcomes


def test_catching_up_over_many_ranges_stores_every_log_once_without_gaps(
    make_rail: Any, rpc: ChainRpc, token: LocalToken
) -> None:
    usdc: Rail = make_rail(max_range_blocks=3)
    account_id, address = usdc.customer()
    amounts = [1_000_000 * (i + 1) for i in range(5)]
    for amount in amounts:
        send_transfer(token, address, amount)
        mine(rpc, 2)
    counting = RangeLimitedRpc(rpc, max_blocks=3)

    outcomes = poll_one_call_at_a_time(usdc, counting)
    assert len(outcomes) > 4
    assert outcomes[-1].caught_up
    assert all(b.from_block == a.to_block + 1 for a, b in pairwise(outcomes)), "in order, no gap, no overlap"
    assert outcomes[0].from_block == usdc.chain.start_block
    assert outcomes[-1].to_block == rpc.block_number()
    assert [d.amount_usdc_units for d in usdc.deposits(account_id)] == amounts
    assert sum(o.new_deposits for o in outcomes) == len(amounts)

    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    assert usdc.balance(account_id).total_credits == sum(amounts) // 10_000
    usdc.assert_invariants()


def test_a_failed_store_during_catch_up_keeps_what_was_committed_and_the_rerun_completes(
    make_rail: Any, rpc: ChainRpc, token: LocalToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    usdc: Rail = make_rail(max_range_blocks=2)
    account_id, address = usdc.customer()
    amounts = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    for amount in amounts:
        send_transfer(token, address, amount)
        mine(rpc, 1)
    insert_observed = usdc_repo.insert_observed
    calls = {"n": 0}

    def fails_on_the_third(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        stored = insert_observed(*args, **kwargs)
        if calls["n"] == 3:
            raise RuntimeError("the database went away")  # after the writes, before the commit
        return stored

    monkeypatch.setattr(usdc_repo, "insert_observed", fails_on_the_third)
    with pytest.raises(RuntimeError, match="went away"):
        tasks.poll(usdc.engine, usdc.chain, rpc, utcnow(), 100, max_calls_per_poll=1)
    cursor = usdc.cursor()
    assert cursor.next_block == usdc.chain.start_block + 4, "two polls of two blocks committed"
    committed = usdc.deposits(account_id)
    assert all(d.block_number < cursor.next_block for d in committed)

    monkeypatch.undo()
    assert tasks.poll(usdc.engine, usdc.chain, rpc, utcnow(), 100, max_calls_per_poll=1) == len(amounts) - len(
        committed
    )
    assert [d.amount_usdc_units for d in usdc.deposits(account_id)] == amounts
    assert usdc.cursor().next_block == rpc.block_number() + 1
    usdc.assert_invariants()


def test_a_reorg_below_a_later_poll_of_the_run_rewinds_and_the_deposit_is_credited_once(
    make_rail: Any, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    usdc: Rail = make_rail(max_range_blocks=2, confirmations=2)
    account_id, address = usdc.customer()
    signed, block = send_transfer(token, address, 7_000_000)  # in the first range scanned
    mine(rpc, 5)

    def transfer_moves_up() -> None:
        # The second poll's scan sees the chain change below it: the range the first poll stored.
        reorg(rpc, rpc.block_number() - block + 1, [(signed, 2)])
        wallet.sync_nonce()

    hooked = HookedRpc(rpc, "get_logs", transfer_moves_up, after_calls=1)
    first = poll_chain(usdc.engine, usdc.chain, hooked, now=utcnow(), max_calls=1)
    assert first.new_deposits == 1
    second = poll_chain(usdc.engine, usdc.chain, hooked, now=utcnow(), max_calls=1)
    assert second.rewound_to == block
    assert usdc.deposits(account_id)[0].status == "orphaned"

    mine(rpc, usdc.chain.confirmations)
    poll_one_call_at_a_time(usdc, rpc)
    usdc.confirm(rpc)
    [deposit] = usdc.deposits(account_id)
    assert (deposit.status, deposit.block_number) == ("credited", block + 2)
    assert usdc.balance(account_id).total_credits == 700
    usdc.assert_invariants()


def test_a_reorg_under_a_range_scanned_but_not_yet_stored_is_noticed_and_the_deposit_credited_once(
    make_rail: Any, rpc: ChainRpc, token: LocalToken, wallet: DevWallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    usdc: Rail = make_rail(max_range_blocks=2, confirmations=2)
    account_id, address = usdc.customer()
    signed, block = send_transfer(token, address, 7_000_000)  # in the first range
    mine(rpc, 5)
    reorged = threading.Event()

    def transfer_moves_up() -> None:
        # While the first range is being stored, the second one's fetch sees the chain change under the first.
        reorg(rpc, rpc.block_number() - block + 1, [(signed, 2)])
        wallet.sync_nonce()
        reorged.set()

    insert_observed = usdc_repo.insert_observed

    def insert_once_reorged(session: Any, chain_id: int, transfers: Any, account_of: Any, now: Any) -> int:
        if transfers and not reorged.is_set():
            assert reorged.wait(30), "the next range is fetched while this one is stored"
        return insert_observed(session, chain_id, transfers, account_of, now)

    monkeypatch.setattr(usdc_repo, "insert_observed", insert_once_reorged)
    hooked = HookedRpc(rpc, "get_logs", transfer_moves_up, after_calls=1)
    outcomes = catch_up(usdc.engine, usdc.chain, hooked, now=utcnow(), max_calls=1)

    assert outcomes[0].new_deposits == 1, "the first range was stored, as it was before the reorg"
    assert [o.rewound_to for o in outcomes if o.rewound_to is not None] == [block]
    assert sum(o.revived_deposits for o in outcomes) == 1
    assert outcomes[-1].caught_up
    [deposit] = usdc.deposits(account_id)
    assert (deposit.status, deposit.block_number) == ("observed", block + 2)
    assert deposit.block_hash == rpc.block_hashes([block + 2])[block + 2]

    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [deposit] = usdc.deposits(account_id)
    assert (deposit.status, deposit.block_number) == ("credited", block + 2)
    assert usdc.balance(account_id).total_credits == 700
    usdc.assert_invariants()
