from collections.abc import Iterable

import pytest

from chain.devchain import LocalToken, mine
from chain.errors import ChainUnreachableError
from chain.logs import TransferLog
from chain.rpc import ChainReader, ChainRpc
from chain.scanner import ScannerConfig, ScanState, TransferScanner

from .helpers import RangeLimitedRpc, ResultLimitedRpc, WrappedRpc, receipt_transfers, scan_until_caught_up


def make_transfers(
    rpc: ChainRpc, token: LocalToken, recipients: list[str], *, txs: int, rounds: int = 1, gap_blocks: int = 2
) -> list[TransferLog]:
    """``txs`` transactions each sending to every recipient ``rounds`` times, with empty blocks between them."""
    expected: list[TransferLog] = []
    for i in range(txs):
        receipt = token.transfer_many(recipients, 1_000 + i, rounds=rounds)
        expected.extend(receipt_transfers(receipt))
        mine(rpc, gap_blocks)
    return expected


def keys(transfers: list[TransferLog]) -> list[tuple[int, int, str]]:
    return [(t.block_number, t.log_index, t.tx_hash) for t in transfers]


def test_scanner_finds_every_transfer_to_watched_addresses_across_many_ranges(rpc, token, new_addresses):
    watched = new_addresses(20)
    start = rpc.block_number() + 1
    expected = make_transfers(rpc, token, watched, txs=6, rounds=2)
    token.transfer_many(new_addresses(5), 7)  # to addresses nobody watches
    head = rpc.block_number()

    scanner = TransferScanner(rpc, ScannerConfig(tokens=(token.address,), max_range_blocks=8, grow_below_logs=100))
    found, state, results = scan_until_caught_up(scanner, ScanState(start, range_blocks=2), watched, to_block=head)

    assert len(expected) == 6 * 20 * 2
    assert keys(found) == keys(expected)
    assert found == expected
    assert state.next_block == head + 1
    assert state.range_blocks == 8, "quiet ranges grow up to the maximum"
    assert sum(r.calls for r in results) > 2


def test_range_halves_when_the_provider_refuses_large_ranges_and_no_log_is_lost(rpc, token, new_addresses):
    watched = new_addresses(4)
    start = rpc.block_number() + 1
    expected = make_transfers(rpc, token, watched, txs=5, gap_blocks=3)
    head = rpc.block_number()
    limited = RangeLimitedRpc(rpc, max_blocks=3)

    scanner = TransferScanner(limited, ScannerConfig(tokens=(token.address,), max_range_blocks=64))
    found, state, results = scan_until_caught_up(scanner, ScanState(start, range_blocks=64), watched, to_block=head)

    assert found == expected
    assert state.next_block == head + 1
    refused = [
        to - frm + 1 for frm, to, _ in limited.asked if (frm, to) not in {(f, t) for f, t, _ in limited.answered}
    ]
    assert refused, "the first, whole-range query was refused"
    assert refused == sorted(refused, reverse=True), "a refused span is never asked again"
    assert min(refused) == 4
    assert sum(r.shrinks for r in results) == len(refused)
    assert all(to - frm + 1 <= 3 for frm, to, _ in limited.answered)
    covered = sorted(block for frm, to, _ in limited.answered for block in range(frm, to + 1))
    assert covered == list(range(start, head + 1)), "every block scanned exactly once"


def test_too_many_results_in_one_block_splits_the_address_list(rpc, token, new_addresses):
    watched = new_addresses(20)
    start = rpc.block_number() + 1
    expected = make_transfers(rpc, token, watched, txs=1, rounds=3, gap_blocks=0)  # 60 logs in one block
    head = rpc.block_number()
    limited = ResultLimitedRpc(rpc, max_logs=40)

    scanner = TransferScanner(limited, ScannerConfig(tokens=(token.address,)))
    found, state, _ = scan_until_caught_up(scanner, ScanState(start, range_blocks=10), watched, to_block=head)

    assert found == expected
    assert state.next_block == head + 1
    assert max(n for _, _, n in limited.answered) <= 40


def test_long_address_lists_are_queried_in_chunks_and_merged_in_chain_order(rpc, token, new_addresses):
    watched = new_addresses(20)
    start = rpc.block_number() + 1
    expected = make_transfers(rpc, token, watched, txs=2, gap_blocks=1)
    head = rpc.block_number()
    wrapped = WrappedRpc(rpc)

    scanner = TransferScanner(wrapped, ScannerConfig(tokens=(token.address,), max_addresses_per_query=7))
    result = scanner.scan(ScanState(start, range_blocks=100), watched, to_block=head)

    assert result.caught_up
    assert result.transfers == expected
    assert sorted(n for _, _, n in wrapped.asked) == [6, 7, 7]


def test_target_is_head_minus_confirmations(rpc, token, new_addresses):
    watched = new_addresses(1)
    start = rpc.block_number() + 1
    receipt = token.transfer(watched[0], 5_000_000)
    block = int(receipt["blockNumber"], 16)
    scanner = TransferScanner(rpc, ScannerConfig(tokens=(token.address,), confirmations=3))

    first = scanner.scan(ScanState(start), watched)
    assert first.target_block == block - 3
    assert first.transfers == []
    assert first.state.next_block == start, "nothing scanned past the target"

    mine(rpc, 3)
    second = scanner.scan(first.state, watched)
    assert second.target_block == block
    assert [t.value_units for t in second.transfers] == [5_000_000]


def test_finalized_tag_target(rpc, token, new_addresses):
    watched = new_addresses(1)
    start = rpc.block_number() + 1
    token.transfer(watched[0], 1)
    scanner = TransferScanner(rpc, ScannerConfig(tokens=(token.address,), head_tag="finalized"))
    assert scanner.scan(ScanState(start), watched).transfers == []
    mine(rpc, 2)  # finalized = latest - 2 with one slot per epoch
    assert [t.value_units for t in scanner.scan(ScanState(start), watched).transfers] == [1]


def test_other_tokens_and_zero_value_transfers_are_returned_flagged(rpc, token, other_token, new_addresses):
    watched = new_addresses(1)
    start = rpc.block_number() + 1
    token.transfer(watched[0], 2_500_000)
    token.transfer(watched[0], 0)
    other_token.transfer(watched[0], 9_000_000)
    head = rpc.block_number()

    any_token = TransferScanner(rpc, ScannerConfig(tokens=None))
    found = any_token.scan(ScanState(start), watched, to_block=head).transfers
    assert [(t.token, t.value_units, t.is_zero_value) for t in found] == [
        (token.address, 2_500_000, False),
        (token.address, 0, True),
        (other_token.address, 9_000_000, False),
    ]
    creditable = [t for t in found if t.is_from_token(token.address) and not t.is_zero_value]
    assert [t.value_units for t in creditable] == [2_500_000]

    usdc_only = TransferScanner(rpc, ScannerConfig(tokens=(token.address,)))
    assert {t.token for t in usdc_only.scan(ScanState(start), watched, to_block=head).transfers} == {token.address}


def test_block_hashes_near_the_target_come_with_the_logs(rpc, token, new_addresses):
    watched = new_addresses(1)
    start = rpc.block_number() + 1
    receipt = token.transfer(watched[0], 10)
    mine(rpc, 3)
    head = rpc.block_number()
    scanner = TransferScanner(rpc, ScannerConfig(tokens=(token.address,), hash_window_blocks=3))

    result = scanner.scan(ScanState(start), watched)

    assert sorted(result.block_hashes) == [head - 2, head - 1, head]
    assert result.block_hashes[head] == rpc.block_header(head)["hash"]
    assert result.transfers[0].block_hash == receipt["blockHash"]


def test_no_watched_addresses_advances_without_queries(rpc):
    wrapped = WrappedRpc(rpc)
    scanner = TransferScanner(wrapped, ScannerConfig(tokens=("0x" + "11" * 20,)))
    head = rpc.block_number()
    result = scanner.scan(ScanState(max(0, head - 5)), [], to_block=head)
    assert result.caught_up
    assert result.state.next_block == head + 1
    assert wrapped.asked == []


def test_scanning_every_recipient_of_every_contract_is_refused(rpc):
    with pytest.raises(ValueError, match="give addresses or tokens"):
        TransferScanner(rpc, ScannerConfig(tokens=None)).scan(ScanState(0), None)


class FailingAfter(WrappedRpc):
    def __init__(self, inner: ChainReader, ok_calls: int) -> None:
        super().__init__(inner)
        self.ok_calls = ok_calls

    def before(self, from_block: int, to_block: int) -> None:
        if len(self.asked) > self.ok_calls:
            raise ChainUnreachableError("cannot reach the node: connection refused", method="eth_getLogs")


def test_failure_before_any_progress_raises_and_failure_later_keeps_progress(rpc, token, new_addresses):
    watched = new_addresses(2)
    start = rpc.block_number() + 1
    expected = make_transfers(rpc, token, watched, txs=3, gap_blocks=1)
    head = rpc.block_number()
    state = ScanState(start, range_blocks=2)

    with pytest.raises(ChainUnreachableError):
        TransferScanner(FailingAfter(rpc, 0), ScannerConfig(tokens=(token.address,), max_range_blocks=2)).scan(
            state, watched, to_block=head
        )

    scanner = TransferScanner(FailingAfter(rpc, 1), ScannerConfig(tokens=(token.address,), max_range_blocks=2))
    partial = scanner.scan(state, watched, to_block=head)
    assert isinstance(partial.interrupted_by, ChainUnreachableError)
    assert not partial.caught_up
    assert partial.state.next_block == start + 2
    assert partial.transfers == [t for t in expected if t.block_number < start + 2]

    rest = TransferScanner(rpc, ScannerConfig(tokens=(token.address,))).scan(partial.state, watched, to_block=head)
    assert partial.transfers + rest.transfers == expected


class CountingHashes(WrappedRpc):
    """Records each block_hashes request (the block numbers asked), and can run a hook before the next one."""

    def __init__(self, inner: ChainReader) -> None:
        super().__init__(inner)
        self.hash_requests: list[list[int]] = []

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        wanted = sorted(numbers)
        self.hash_requests.append(wanted)
        return self.inner.block_hashes(wanted)


def test_a_log_target_ends_each_scan_at_about_that_many_logs_and_narrows_a_dense_range(rpc, token, new_addresses):
    watched = new_addresses(20)
    start = rpc.block_number() + 1
    expected = make_transfers(rpc, token, watched, txs=6, rounds=2)  # 40 logs every third block
    head = rpc.block_number()
    wrapped = WrappedRpc(rpc)
    scanner = TransferScanner(
        wrapped, ScannerConfig(tokens=(token.address,), grow_below_logs=25, target_logs_per_scan=50)
    )

    found, state, results = scan_until_caught_up(scanner, ScanState(start, range_blocks=9), watched, to_block=head)

    assert found == expected
    assert state.next_block == head + 1
    assert wrapped.answered[0][2] == 120, "three dense blocks in the first, wide call"
    assert results[0].state.range_blocks == 9 * 50 // 120, "the next range narrowed to about 50 logs"
    assert all(n <= 50 for _, _, n in wrapped.answered[1:]), "narrow enough from then on"
    for result in results:
        # A scan ends with the call that reaches the target: without its last call it held fewer logs.
        calls = [n for frm, to, n in wrapped.answered if result.from_block <= frm <= result.to_block]
        assert sum(calls[:-1]) < 50
    assert sum(r.shrinks for r in results) == 0, "narrowing on density is not a refusal"


def test_recheck_blocks_are_read_again_after_the_logs_with_the_scans_own_block_hashes(rpc, token, new_addresses):
    watched = new_addresses(2)
    before = rpc.block_number()
    start = before + 1
    make_transfers(rpc, token, watched, txs=2, gap_blocks=1)
    head = rpc.block_number()
    earlier = rpc.block_hashes([before - 1, before])

    near = CountingHashes(rpc)
    result = TransferScanner(near, ScannerConfig(tokens=(token.address,), max_range_blocks=2)).scan(
        ScanState(start, range_blocks=2), watched, to_block=head, recheck=[before - 1, before]
    )
    assert result.caught_up
    assert result.rechecked_hashes == earlier
    assert len(near.hash_requests) == result.calls, "no request of their own: they come with each call's hashes"
    assert all({before - 1, before} <= set(asked) for asked in near.hash_requests)

    far = CountingHashes(rpc)  # no block hashes read near the target: one request after the logs
    result = TransferScanner(far, ScannerConfig(tokens=(token.address,), hash_window_blocks=0)).scan(
        ScanState(start), watched, to_block=head, recheck=[before]
    )
    assert result.rechecked_hashes == {before: earlier[before]}
    assert far.hash_requests == [[before]]
    assert far.asked, "after the logs"

    nothing = CountingHashes(rpc)
    result = TransferScanner(nothing, ScannerConfig(tokens=(token.address,))).scan(
        ScanState(head + 1), watched, to_block=head, recheck=[before]
    )
    assert result.rechecked_hashes == {}, "nothing scanned, nothing read"
    assert nothing.hash_requests == []
