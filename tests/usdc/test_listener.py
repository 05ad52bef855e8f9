"""The listener and the confirmation pass against a real anvil: confirmations, reorgs, ignored transfers, provider
range limits, and polls interrupted or overtaken."""

from __future__ import annotations

from typing import Any

import pytest

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger import repository as ledger_repo
from services.ledger.models import Rail as LedgerRail
from services.review.service import list_exceptions
from services.usdc import repository as usdc_repo
from services.usdc.crediting import deposit_reference
from services.usdc.flows import listener
from services.usdc.flows.listener import CursorMoved, poll_chain
from tests.chain.conftest import random_address
from tests.chain.helpers import RangeLimitedRpc

from .conftest import CHAIN_ID, Rail
from .support import CountingRpc, HookedRpc, send_transfer


def test_a_deposit_is_credited_after_its_confirmations_and_not_before(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = usdc.customer()
    _, block = send_transfer(token, address, 12_345_678)

    usdc.poll_until_caught_up(rpc)
    [deposit] = usdc.deposits(account_id)
    assert (deposit.status, deposit.block_number, deposit.amount_usdc_units) == ("observed", block, 12_345_678)
    assert deposit.to_address == address

    for blocks_on_top in range(usdc.chain.confirmations):
        assert rpc.block_number() - block == blocks_on_top
        usdc.poll_until_caught_up(rpc)
        assert usdc.confirm(rpc) == 0
        assert usdc.deposits(account_id)[0].status == "observed"
        assert usdc.balance(account_id).total_credits == 0
        mine(rpc, 1)

    assert rpc.block_number() - block == usdc.chain.confirmations
    assert usdc.confirm(rpc) == 1
    [deposit] = usdc.deposits(account_id)
    assert deposit.status == "credited"
    assert (deposit.carry_in_usdc_units, deposit.credits_minted, deposit.carry_out_usdc_units) == (0, 1234, 5678)
    assert usdc.balance(account_id).total_credits == 1234
    assert usdc.carry(account_id) == 5678
    assert usdc.system_balance(f"funding:usdc:{CHAIN_ID}") == -1234
    with unit_of_work(usdc.engine) as session:
        lot = ledger_repo.find_lot_by_ref(
            session, LedgerRail.USDC, deposit_reference(CHAIN_ID, deposit.tx_hash, deposit.log_index)
        )
        assert lot is not None
        assert lot.id == deposit.lot_id
        assert (lot.credits, lot.cost_basis_usdc_units, lot.account_id) == (1234, 12_340_000, account_id)

    # Confirming and polling again changes nothing.
    mine(rpc, 2)
    usdc.poll_until_caught_up(rpc)
    assert usdc.confirm(rpc) == 0
    assert usdc.balance(account_id).total_credits == 1234
    assert len(usdc.deposits()) == 1
    usdc.assert_invariants()


def test_with_the_finalized_tag_a_deposit_waits_for_finalization(
    make_rail: Any, rpc: ChainRpc, token: LocalToken
) -> None:
    usdc: Rail = make_rail(use_finalized=True, confirmations=50)  # the tag decides, not the count
    account_id, address = usdc.customer()
    _, block = send_transfer(token, address, 2_000_000)
    usdc.poll_until_caught_up(rpc)
    assert rpc.block_number("finalized") < block
    assert usdc.confirm(rpc) == 0
    mine(rpc, 2)  # anvil here finalises latest - 2
    assert rpc.block_number("finalized") >= block
    assert usdc.confirm(rpc) == 1
    assert usdc.balance(account_id).total_credits == 200
    usdc.assert_invariants()


def test_a_reorg_before_confirmation_removes_the_deposit_and_it_is_never_credited(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    _, block = send_transfer(token, address, 5_000_000)
    mine(rpc, 1)
    usdc.poll_until_caught_up(rpc)
    assert usdc.deposits(account_id)[0].status == "observed"

    reorg(rpc, 2, [])  # the transfer's block and the one on top are replaced; the transfer is gone
    wallet.sync_nonce()
    mine(rpc, usdc.chain.confirmations + 2)

    outcomes = usdc.poll_until_caught_up(rpc)
    assert outcomes[0].rewound_to == block
    assert usdc.confirm(rpc) == 0
    [deposit] = usdc.deposits(account_id)
    assert deposit.status == "orphaned"
    assert deposit.lot_id is None
    assert deposit.credits_minted is None
    assert usdc.balance(account_id).total_credits == 0
    with unit_of_work(usdc.engine) as session:
        assert list_exceptions(session) == []
    usdc.assert_invariants()


def test_a_reorg_that_moves_the_deposit_to_another_block_credits_it_once(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    signed, block = send_transfer(token, address, 5_000_000)
    mine(rpc, 1)
    usdc.poll_until_caught_up(rpc)
    [before] = usdc.deposits(account_id)

    reorg(rpc, 2, [(signed, 1)])  # replaced from the transfer's block on; the transfer lands one block later
    wallet.sync_nonce()
    mine(rpc, usdc.chain.confirmations)

    outcomes = usdc.poll_until_caught_up(rpc)
    assert outcomes[0].rewound_to == block
    assert sum(o.revived_deposits for o in outcomes) == 1
    assert sum(o.new_deposits for o in outcomes) == 0
    assert usdc.confirm(rpc) == 1
    [after] = usdc.deposits(account_id)
    assert after.id == before.id
    assert (after.status, after.block_number) == ("credited", block + 1)
    assert after.block_hash != before.block_hash
    assert after.block_hash == rpc.block_hashes([block + 1])[block + 1]
    assert usdc.balance(account_id).total_credits == 500

    mine(rpc, 2)
    usdc.settle(rpc)
    assert usdc.balance(account_id).total_credits == 500
    with unit_of_work(usdc.engine) as session:
        assert list_exceptions(session) == []
    usdc.assert_invariants()


def test_transfers_of_another_token_of_nothing_or_to_unknown_addresses_are_ignored(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, other_token: LocalToken
) -> None:
    account_id, address = usdc.customer()
    other_token.transfer(address, 5_000_000)  # not the configured USDC contract
    token.transfer(address, 0)  # a zero-value transfer (address poisoning)
    token.transfer(random_address(), 5_000_000)  # nobody's deposit address
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    assert usdc.deposits() == []
    assert usdc.cursor().next_block == rpc.block_number() + 1

    _, block = send_transfer(token, address, 3_000_000)
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [deposit] = usdc.deposits()
    assert (deposit.block_number, deposit.status, deposit.account_id) == (block, "credited", account_id)
    assert usdc.balance(account_id).total_credits == 300
    usdc.assert_invariants()


def test_a_provider_refusing_large_ranges_makes_the_range_shrink(usdc: Rail, rpc: ChainRpc, token: LocalToken) -> None:
    limited = RangeLimitedRpc(rpc, max_blocks=3)
    account_id, address = usdc.customer()
    blocks = []
    for value_units in (1_000_000, 2_000_000, 3_000_000, 4_000_000):
        blocks.append(send_transfer(token, address, value_units)[1])
        mine(rpc, 3)

    usdc.poll_until_caught_up(limited)
    assert any(to - start + 1 > 3 for start, to, _ in limited.asked), "a wide range was asked first"
    assert limited.answered
    assert all(to - start + 1 <= 3 for start, to, _ in limited.answered)
    assert usdc.cursor().range_blocks <= 3
    covered = sorted(block for start, to, _ in limited.answered for block in range(start, to + 1))
    assert covered == list(range(usdc.chain.start_block, rpc.block_number() + 1)), "no gap, no overlap"

    usdc.confirm(limited)
    assert [d.block_number for d in usdc.deposits(account_id)] == blocks
    assert usdc.balance(account_id).total_credits == 1_000
    usdc.assert_invariants()


def test_a_poll_that_fails_after_its_scan_stores_nothing_and_the_rerun_stores_each_log_once(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id, address = usdc.customer()
    for value_units in (1_000_000, 2_000_000):
        send_transfer(token, address, value_units)
    usdc.poll_until_caught_up(rpc)
    assert len(usdc.deposits()) == 2
    cursor = usdc.cursor()

    for value_units in (3_000_000, 4_000_000, 5_000_000):
        send_transfer(token, address, value_units)
        mine(rpc, 1)

    insert_observed = usdc_repo.insert_observed

    def killed(*args: Any, **kwargs: Any) -> None:
        insert_observed(*args, **kwargs)
        raise RuntimeError("killed after storing the deposits and moving the cursor, before the commit")

    monkeypatch.setattr(usdc_repo, "insert_observed", killed)
    with pytest.raises(RuntimeError, match="killed"):
        poll_chain(usdc.engine, usdc.chain, rpc, now=utcnow())
    assert len(usdc.deposits()) == 2, "the unit of work rolled back"
    assert usdc.cursor().next_block == cursor.next_block

    monkeypatch.undo()
    usdc.poll_until_caught_up(rpc)
    deposits = usdc.deposits(account_id)
    assert [d.amount_usdc_units for d in deposits] == [1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000]
    assert len({(d.tx_hash, d.log_index) for d in deposits}) == 5
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    assert usdc.balance(account_id).total_credits == 1_500
    usdc.assert_invariants()


def test_a_second_poller_overtaking_the_first_leaves_each_log_stored_once(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = usdc.customer()
    for value_units in (1_000_000, 2_000_000):
        send_transfer(token, address, value_units)

    def other_poller() -> None:
        poll_chain(usdc.engine, usdc.chain, rpc, now=utcnow())

    overtaken = HookedRpc(rpc, "get_logs", other_poller)
    with pytest.raises(CursorMoved):
        poll_chain(usdc.engine, usdc.chain, overtaken, now=utcnow())
    usdc.poll_until_caught_up(rpc)
    assert [d.amount_usdc_units for d in usdc.deposits(account_id)] == [1_000_000, 2_000_000]
    usdc.assert_invariants()


def test_an_address_created_while_a_poll_runs_is_not_missed(usdc: Rail, rpc: ChainRpc, token: LocalToken) -> None:
    usdc.customer("first")
    created: dict[str, Any] = {}

    def customer_pays_meanwhile() -> None:
        # Between the poll's start and its reading of the head: a new address is handed out and paid at once.
        account_id, address = usdc.customer("second")
        created.update(account_id=account_id, block=send_transfer(token, address, 6_000_000)[1])

    usdc.poll_until_caught_up(HookedRpc(rpc, "block_number", customer_pays_meanwhile))
    [deposit] = usdc.deposits()
    assert (deposit.account_id, deposit.block_number) == (created["account_id"], created["block"])
    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    assert usdc.balance(created["account_id"]).total_credits == 600
    usdc.assert_invariants()


def test_a_reorg_during_a_scan_is_noticed_before_its_results_are_stored(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = usdc.customer()
    signed, block = send_transfer(token, address, 5_000_000)
    mine(rpc, 1)
    usdc.poll_until_caught_up(rpc)  # remembers the hashes of the transfer's block and the one on top
    mine(rpc, 2)

    def reorg_below_the_scan() -> None:
        # The blocks already scanned change while the poll scans the two new ones: the transfer moves up one.
        reorg(rpc, 4, [(signed, 1)])
        wallet.sync_nonce()

    outcome = poll_chain(usdc.engine, usdc.chain, HookedRpc(rpc, "get_logs", reorg_below_the_scan), now=utcnow())
    assert outcome.rewound_to == block
    assert outcome.new_deposits == 0
    assert usdc.deposits(account_id)[0].status == "orphaned"

    mine(rpc, usdc.chain.confirmations)
    usdc.settle(rpc)
    [deposit] = usdc.deposits(account_id)
    assert (deposit.status, deposit.block_number) == ("credited", block + 1)
    assert usdc.balance(account_id).total_credits == 500
    usdc.assert_invariants()


def test_the_stored_block_hashes_stay_bounded(make_rail: Any, rpc: ChainRpc) -> None:
    usdc: Rail = make_rail()
    usdc.customer()
    for _ in range(3):
        mine(rpc, 40)
        listener.poll_chain(usdc.engine, usdc.chain, rpc, now=utcnow(), keep_blocks=70)
    with unit_of_work(usdc.engine) as session:
        stored = usdc_repo.recent_blocks(session, usdc.chain.chain_id)
    head = rpc.block_number()
    assert sorted(stored) == list(range(head - 69, head + 1))
    assert stored == {n: h for n, h in rpc.block_hashes(stored).items() if h is not None}


def test_a_poll_near_the_head_asks_the_node_three_times(usdc: Rail, rpc: ChainRpc, token: LocalToken) -> None:
    _, address = usdc.customer()
    usdc.poll_until_caught_up(rpc)
    _, block = send_transfer(token, address, 4_000_000)
    counting = CountingRpc(rpc)

    outcome = poll_chain(usdc.engine, usdc.chain, counting, now=utcnow())

    assert (outcome.new_deposits, outcome.to_block, outcome.caught_up) == (1, block, True)
    # The head, the logs, and the hashes of the blocks scanned together with the one the scan builds on.
    assert counting.calls == {"block_number": 1, "get_logs": 1, "block_hashes": 1}
    with unit_of_work(usdc.engine) as session:
        assert max(usdc_repo.recent_blocks(session, usdc.chain.chain_id)) == block
