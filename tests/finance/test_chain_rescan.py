"""Finance's re-scan of a chain against a real anvil, on both databases.

Each test makes its blocks at exact timestamps after the newest block it finds, so a window's edges fall exactly
where the test says, and derives fresh deposit addresses (a rail of its own), so it sees only its own transfers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from chain.devchain import reorg
from chain.rpc import ChainRpc, RetryPolicy
from services.core.db import unit_of_work
from services.finance.flows.chain_rescan import AMOUNT_OUT_OF_RANGE, ChainRescanFailed, blocks_for_window
from services.finance.models import PullStatus
from services.review.service import list_exceptions, usdc_reference
from services.usdc import repository as usdc_repo
from tests.chain.conftest import random_address
from tests.chain.helpers import RangeLimitedRpc, WrappedRpc
from tests.finance.chain_support import (
    ChainTime,
    WithHeaders,
    anvil,
    chain_settings_for,
    make_rail,
    mirror,
    other_token,
    own_chain,
    pull_of,
    rail_settings,
    rescan,
    rpc,
    token,
    wallet,
)
from tests.usdc.conftest import Rail
from tests.usdc.support import HookedRpc

__all__ = ["anvil", "make_rail", "other_token", "own_chain", "rpc", "token", "wallet"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATER = timedelta(days=1)


def rows_by_reference(engine: Engine, chain_id: int) -> dict[str, Any]:
    return {row.reference: row for row in mirror(engine, chain_id)}


# ---- a window's blocks ------------------------------------------------------------------------------------------


def test_a_window_maps_to_the_blocks_whose_timestamps_lie_in_it(rpc):
    clock = ChainTime(rpc)
    first = clock.mine(0)
    for seconds in (10, 20, 30, 40, 50):
        clock.mine(seconds)
    clock.rpc.request("evm_mine", [clock.base + 50])  # two blocks may share a timestamp
    head = rpc.block_number()
    assert head == first + 6
    reader = WithHeaders(rpc, rpc)

    def blocks(start: datetime, end: datetime, safe_head: int = head) -> tuple[int, int] | None:
        return blocks_for_window(reader, start, end, safe_head=safe_head)

    assert blocks(clock.at(0), clock.at(60)) == (first, first + 6)
    assert blocks(clock.at(10), clock.at(30)) == (first + 1, first + 2), "the start is in, the end is out"
    assert blocks(clock.at(10), clock.at(30) + timedelta(milliseconds=500)) == (first + 1, first + 3)
    assert blocks(clock.at(10) + timedelta(microseconds=1), clock.at(30)) == (first + 2, first + 2)
    assert blocks(clock.at(50), clock.at(51)) == (first + 5, first + 6)
    assert blocks(clock.at(11), clock.at(20)) is None, "no block in the window"
    assert blocks(EPOCH, clock.at(0)) == (0, first - 1), "every block before the test's"

    # Bounded by the safe head: blocks above it are not in the range, and a window beyond it has no block yet.
    assert blocks(clock.at(0), clock.at(60), safe_head=first + 2) == (first, first + 2)
    assert blocks(clock.at(30), clock.at(60), safe_head=first + 2) is None
    assert blocks(clock.at(60), clock.at(100)) is None
    assert blocks(clock.at(0), clock.at(60), safe_head=-1) is None

    reader.headers.clear()
    blocks(clock.at(10), clock.at(40))
    assert len(reader.headers) <= 2 * math.ceil(math.log2(head + 2)) + 2, "a binary search: O(log n) headers"


# ---- what is stored ---------------------------------------------------------------------------------------------


def test_transfers_to_deposit_addresses_are_stored_once_with_their_reference_and_amount(make_rail, rpc, token, wallet):
    rail: Rail = make_rail(confirmations=0)
    chain_id = rail.chain.chain_id
    _, alice = rail.customer("alice")
    _, bob = rail.customer("bob")
    clock = ChainTime(rpc)
    sent = [
        clock.send(token, alice, 1_500_000, 10),
        clock.send(token, bob, 2_000_001, 20),
        clock.send(token, alice, 250_000, 30),
    ]
    clock.send(token, alice, 9_000_000, 100)  # after the window
    start, end = clock.at(0), clock.at(100)

    result = rescan(rail, WithHeaders(rpc, rpc), start, end, now=end + LATER)

    assert result.complete
    assert not result.already_complete
    assert (result.from_block, result.to_block) == (sent[0].block, sent[2].block)
    assert result.transfers == 3
    rows = mirror(rail.engine, chain_id)
    assert [row.reference for row in rows] == [s.reference for s in sent]
    assert [row.reference for row in rows] == [f"{chain_id}:{s.log.tx_hash}:{s.log.log_index}" for s in sent]
    assert [row.amount_usdc_units for row in rows] == [1_500_000, 2_000_001, 250_000]
    assert all(isinstance(row.amount_usdc_units, int) for row in rows)
    assert [row.to_address for row in rows] == [alice, bob, alice]
    assert {row.from_address for row in rows} == {wallet.address}
    assert [(row.block_number, row.block_hash) for row in rows] == [(s.block, s.log.block_hash) for s in sent]

    pull = pull_of(rail.engine, chain_id, start, end)
    assert pull.complete
    assert pull.source == f"chain:{chain_id}"
    assert pull.records == 3
    assert pull.last_error is None
    assert pull.details["from_block"] == sent[0].block
    assert pull.details["to_block"] == sent[2].block
    assert pull.details["safe_head"] == rpc.block_number()
    assert pull.details["settled"] is True

    # Complete for good: nothing is fetched again.
    reader = WithHeaders(rpc, rpc)
    again = rescan(rail, reader, start, end, now=end + LATER)
    assert again.already_complete
    assert again.complete
    assert again.transfers == 3
    assert reader.log_queries == []
    assert reader.headers == []
    assert len(mirror(rail.engine, chain_id)) == 3


def test_other_tokens_zero_amounts_and_unknown_addresses_are_ignored(make_rail, rpc, token, other_token):
    rail: Rail = make_rail(confirmations=0)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    kept = clock.send(token, alice, 3_000_000, 10)
    clock.send(other_token, alice, 5_000_000, 20)  # another contract's "USDC"
    clock.send(token, alice, 0, 30)  # a zero-value transfer (address poisoning)
    clock.send(token, random_address(), 7_000_000, 40)  # not a deposit address
    clock.mine(100)

    result = rescan(rail, WithHeaders(rpc, rpc), clock.at(0), clock.at(100), now=clock.at(100) + LATER)

    assert result.complete
    assert result.transfers == 1
    assert [(row.reference, row.amount_usdc_units) for row in mirror(rail.engine, rail.chain.chain_id)] == [
        (kept.reference, 3_000_000)
    ]


def test_re_scanning_a_window_never_duplicates(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=0)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    sent = [clock.send(token, alice, 1_000_000 + n, 10 * n) for n in range(1, 4)]
    start, end = clock.at(0), clock.at(1_000)  # not over: every re-scan scans it again

    outcomes = [rescan(rail, WithHeaders(rpc, rpc), start, end) for _ in range(3)]

    assert [(o.complete, o.transfers, o.resumed_from) for o in outcomes] == [(False, 3, None)] * 3
    rows = mirror(rail.engine, rail.chain.chain_id)
    assert sorted(row.reference for row in rows) == sorted(s.reference for s in sent)
    pull = pull_of(rail.engine, rail.chain.chain_id, start, end)
    assert pull.status == PullStatus.RUNNING
    assert pull.cursor is None
    assert not pull.complete
    assert pull.records == 3, "the counters are those of the last pass"


# ---- reorganisations ----------------------------------------------------------------------------------------------


def test_a_transfer_reorganised_away_leaves_the_mirror_on_the_next_re_scan(make_rail, rpc, token, wallet):
    rail: Rail = make_rail(confirmations=0)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    stays = clock.send(token, alice, 1_000_000, 10)
    goes = clock.send(token, alice, 2_000_000, 20)
    clock.mine(30)
    start, end = clock.at(0), clock.at(1_000)
    rescan(rail, WithHeaders(rpc, rpc), start, end)
    assert set(rows_by_reference(rail.engine, rail.chain.chain_id)) == {stays.reference, goes.reference}

    reorg(rpc, rpc.block_number() - goes.block + 1, [])  # the second transfer's block and the one on top
    wallet.sync_nonce()
    result = rescan(rail, WithHeaders(rpc, rpc), start, end)

    assert result.transfers == 1
    assert set(rows_by_reference(rail.engine, rail.chain.chain_id)) == {stays.reference}


def test_a_transfer_moved_by_a_reorganisation_is_stored_once_in_its_new_block(make_rail, rpc, token, wallet):
    rail: Rail = make_rail(confirmations=0)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    signed = wallet.sign(token.address, token.transfer_data(alice, 4_000_000))
    rpc.request("evm_setNextBlockTimestamp", [clock.base + 10])
    receipt = wallet.wait(wallet.send_signed(signed))
    old_block = int(receipt["blockNumber"], 16)
    clock.mine(20)
    # anvil stamps the blocks a reorganisation makes with their parent's time: the window starts well before.
    start, end = EPOCH, clock.at(1_000)
    rescan(rail, WithHeaders(rpc, rpc), start, end)
    (before,) = mirror(rail.engine, rail.chain.chain_id)
    assert before.block_number == old_block

    reorg(rpc, 2, [(signed, 1)])  # replaced from the transfer's block on; it lands one block later
    wallet.sync_nonce()
    rescan(rail, WithHeaders(rpc, rpc), start, end)

    (after,) = mirror(rail.engine, rail.chain.chain_id)
    assert after.reference == before.reference
    assert after.amount_usdc_units == 4_000_000
    assert after.block_number == old_block + 1
    assert after.block_hash != before.block_hash
    assert after.block_hash == rpc.block_header(old_block + 1)["hash"]


def test_blocks_the_chain_no_longer_has_leave_the_mirror(make_rail, rpc, token, wallet):
    rail: Rail = make_rail(confirmations=0)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    stays = clock.send(token, alice, 1_000_000, 10)
    snapshot = rpc.request("evm_snapshot")
    clock.send(token, alice, 2_000_000, 20)
    clock.mine(30, count=3)
    start, end = clock.at(0), clock.at(1_000)
    assert rescan(rail, WithHeaders(rpc, rpc), start, end).transfers == 2

    assert rpc.request("evm_revert", [snapshot]) is True  # back to a shorter chain
    wallet.sync_nonce()
    assert rpc.block_number() == stays.block
    result = rescan(rail, WithHeaders(rpc, rpc), start, end)

    assert (result.from_block, result.to_block, result.transfers) == (stays.block, stays.block, 1)
    assert [row.reference for row in mirror(rail.engine, rail.chain.chain_id)] == [stays.reference]


# ---- confirmations ------------------------------------------------------------------------------------------------


def test_a_window_not_fully_confirmed_is_scanned_again_later(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=3)
    chain_id = rail.chain.chain_id
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    early = clock.send(token, alice, 1_000_000, 10)
    clock.mine(20, count=3)
    late = clock.send(token, alice, 2_000_000, 50)  # one block on top of it only
    clock.mine(60)
    start, end = clock.at(0), clock.at(100)

    first = rescan(rail, WithHeaders(rpc, rpc), start, end, now=end + LATER)

    assert not first.complete
    assert first.safe_head == rpc.block_number() - 3
    assert (first.from_block, first.to_block) == (early.block, first.safe_head)
    assert set(rows_by_reference(rail.engine, chain_id)) == {early.reference}
    pull = pull_of(rail.engine, chain_id, start, end)
    assert pull.status == PullStatus.RUNNING
    assert not pull.complete
    assert pull.cursor is None
    assert pull.details["settled"] is False
    assert pull.details["safe_head"] == first.safe_head

    clock.mine(100, count=4)  # the window's end is now confirmed
    reader = WithHeaders(rpc, rpc)
    second = rescan(rail, reader, start, end, now=end + LATER)

    assert second.complete
    assert not second.already_complete
    assert reader.log_queries[0][0] == early.block, "the whole window is scanned again"
    assert (second.from_block, second.to_block) == (early.block, late.block + 1)
    assert set(rows_by_reference(rail.engine, chain_id)) == {early.reference, late.reference}
    assert pull_of(rail.engine, chain_id, start, end).complete

    assert rescan(rail, WithHeaders(rpc, rpc), start, end, now=end + LATER).already_complete


def test_a_chain_on_the_finalized_tag_is_bounded_by_the_finalized_block(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=0, use_finalized=True)  # anvil's finalized block trails by two
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    sent = clock.send(token, alice, 1_000_000, 10)
    clock.mine(20)
    start, end = clock.at(0), clock.at(100)

    pending = rescan(rail, WithHeaders(rpc, rpc), start, end)
    assert pending.safe_head == rpc.block_number("finalized") == sent.block - 1
    assert pending.from_block is None
    assert pending.transfers == 0
    assert not pending.complete

    clock.mine(100, count=3)
    done = rescan(rail, WithHeaders(rpc, rpc), start, end, now=end + LATER)
    assert done.complete
    assert done.transfers == 1
    assert done.to_block == sent.block + 1


# ---- a failing or limited provider --------------------------------------------------------------------------------


def test_a_node_stopped_mid_scan_fails_the_pull_which_resumes_from_its_cursor(engine, own_chain):
    own = own_chain
    chain = chain_settings_for(own.rpc, own.token, confirmations=0, max_range_blocks=4)
    rail = Rail(engine, rail_settings(engine, chain))
    _, alice = rail.customer("alice")
    clock = ChainTime(own.rpc)
    sent = []
    for n in range(6):
        sent.append(clock.send(own.token, alice, 1_000_000 * (n + 1), 10 * n))
        clock.mine(10 * n + 1, count=2)
    clock.mine(100)
    start, end = EPOCH, clock.at(100)
    first_block = 0

    # Sub-ranges of two calls of four blocks: the fourth call meets a stopped node.
    stopping = WithHeaders(HookedRpc(own.rpc, "get_logs", own.node.stop, after_calls=3), own.rpc)
    with pytest.raises(ChainRescanFailed) as caught:
        rescan(rail, stopping, start, end, now=end + LATER, calls_per_subrange=2)

    cursor = first_block + 3 * 4
    message = str(caught.value)
    assert "cannot reach the node" in message
    assert f"chain {chain.chain_id}" in message
    assert f"at block {cursor}" in message
    pull = pull_of(engine, chain.chain_id, start, end)
    assert pull.status == PullStatus.FAILED
    assert pull.cursor == str(cursor)
    assert pull.last_error is not None
    assert "ChainUnreachableError" in pull.last_error
    stored = mirror(engine, chain.chain_id)
    assert [row.reference for row in stored] == [s.reference for s in sent if s.block < cursor]
    assert stored, "the test needs transfers on both sides of the cursor"
    assert len(stored) < len(sent)

    own.node.start()
    reader = WithHeaders(WrappedRpc(own.rpc), own.rpc)
    result = rescan(rail, reader, start, end, now=end + LATER, calls_per_subrange=2)

    assert result.resumed_from == cursor
    assert reader.log_queries[0][0] == cursor, "no block scanned twice"
    assert result.complete
    assert result.transfers == len(sent)
    assert [row.reference for row in mirror(engine, chain.chain_id)] == [s.reference for s in sent]
    done = pull_of(engine, chain.chain_id, start, end)
    assert done.complete
    assert done.last_error is None
    assert done.records == len(sent)


def test_a_node_down_from_the_start_fails_the_pull_with_a_clear_error(engine, own_chain):
    own = own_chain
    chain = chain_settings_for(own.rpc, own.token, confirmations=0)
    rail = Rail(engine, rail_settings(engine, chain))
    rail.customer("alice")
    start, end = EPOCH, datetime.now(UTC)
    own.node.stop()
    reader = ChainRpc(own.rpc.url, retry=RetryPolicy(max_attempts=2, backoff_initial_seconds=0.01))

    with pytest.raises(ChainRescanFailed) as caught:
        rescan(rail, reader, start, end)

    assert "stopped before scanning" in str(caught.value)
    assert "cannot reach the node" in str(caught.value)
    assert caught.value.details["chain_id"] == chain.chain_id
    pull = pull_of(engine, chain.chain_id, start, end)
    assert pull.status == PullStatus.FAILED
    assert pull.cursor is None
    assert pull.last_error is not None
    assert "cannot reach the node" in pull.last_error


def test_a_provider_refusing_large_ranges_makes_the_range_shrink(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=0, max_range_blocks=64)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    sent = [clock.send(token, alice, 1_000_000 + n, 10 * n) for n in range(1, 6)]
    clock.mine(60, count=4)
    clock.mine(100)
    limited = RangeLimitedRpc(rpc, max_blocks=3)
    reader = WithHeaders(limited, rpc)

    result = rescan(rail, reader, clock.at(0), clock.at(100), now=clock.at(100) + LATER)

    assert result.complete
    assert result.shrinks > 0
    assert any(to - frm + 1 > 3 for frm, to, _ in limited.asked), "a wide range was asked and refused"
    assert limited.answered
    assert all(to - frm + 1 <= 3 for frm, to, _ in limited.answered)
    covered = sorted(block for frm, to, _ in limited.answered for block in range(frm, to + 1))
    assert result.from_block is not None
    assert result.to_block is not None
    assert covered == list(range(result.from_block, result.to_block + 1)), "every block once, no gap"
    assert [row.reference for row in mirror(rail.engine, rail.chain.chain_id)] == [s.reference for s in sent]


def test_a_long_address_list_is_split_over_several_queries(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=0)
    addresses = [rail.customer(f"customer {n}")[1] for n in range(5)]
    clock = ChainTime(rpc)
    sent = [clock.send(token, address, 1_000_000 + n, 10 + n) for n, address in enumerate(addresses)]
    clock.mine(100)
    reader = WithHeaders(rpc, rpc)

    result = rescan(rail, reader, clock.at(0), clock.at(100), now=clock.at(100) + LATER, addresses_per_query=2)

    assert result.transfers == 5
    assert sorted(count for _, _, count in reader.log_queries) == [1, 2, 2]
    assert {row.reference for row in mirror(rail.engine, rail.chain.chain_id)} == {s.reference for s in sent}


def test_a_transfer_to_an_address_asked_for_on_another_chain_only_is_re_scanned(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=0)
    # An address registered only on another chain (as it was before every address was registered on every chain):
    # the same address on this chain is the customer's all the same.
    account_id, alice = rail.customer("alice")
    with unit_of_work(rail.engine) as session:
        table = usdc_repo.addresses
        session.execute(table.update().where(table.c.account_id == account_id).values(chain_id=424_242))
    clock = ChainTime(rpc)
    sent = clock.send(token, alice, 2_500_000, 10)
    clock.mine(100)

    result = rescan(rail, WithHeaders(rpc, rpc), clock.at(0), clock.at(100), now=clock.at(100) + LATER)

    assert result.transfers == 1
    assert [(row.reference, row.amount_usdc_units) for row in mirror(rail.engine, rail.chain.chain_id)] == [
        (sent.reference, 2_500_000)
    ]


def test_a_transfer_beyond_a_64_bit_amount_stays_out_of_the_mirror_as_an_exception(make_rail, rpc, token):
    rail: Rail = make_rail(confirmations=0)
    huge = 2**64 + 7
    token.mint(token.wallet.address, huge)
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    too_big = clock.send(token, alice, huge, 10)
    kept = clock.send(token, alice, 1_000_000, 20)
    clock.mine(100)

    result = rescan(rail, WithHeaders(rpc, rpc), clock.at(0), clock.at(100), now=clock.at(100) + LATER)

    assert result.complete
    assert [row.reference for row in mirror(rail.engine, rail.chain.chain_id)] == [kept.reference]
    with unit_of_work(rail.engine) as session:
        [raised] = list_exceptions(session, kind=AMOUNT_OUT_OF_RANGE)
    log = too_big.log
    assert raised.reference == usdc_reference(log.chain_id, log.tx_hash, log.log_index)
    assert raised.details["amount_usdc_units"] == str(huge)
