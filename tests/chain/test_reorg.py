from collections.abc import Iterable, Sequence

from chain.devchain import mine, reorg
from chain.reorg import (
    NO_REORG,
    detect_reorg,
    forget_from,
    non_canonical_blocks,
    remember_block_hashes,
)
from chain.rpc import BlockTag, RawLog, Topic
from chain.scanner import ScannerConfig, ScanState, TransferScanner


def h(n: int, fork: int = 0) -> str:
    return "0x" + f"{fork:02x}" + f"{n:062x}"


class FakeChain:
    """A ChainReader over a fixed canonical block -> hash map."""

    def __init__(self, canonical: dict[int, str]) -> None:
        self.canonical = canonical
        self.calls = 0

    def chain_id(self) -> int:
        return 1

    def block_number(self, tag: BlockTag = "latest") -> int:
        return max(self.canonical)

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        self.calls += 1
        return {n: self.canonical.get(n) for n in numbers}

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        address: str | Sequence[str] | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[RawLog]:
        raise AssertionError("not used")


def test_unchanged_chain_needs_one_lookup():
    known = {n: h(n) for n in range(100, 110)}
    chain = FakeChain(dict(known))
    assert detect_reorg(chain, known) == NO_REORG
    assert chain.calls == 1


def test_fork_point_is_found_walking_back():
    known = {n: h(n) for n in range(100, 110)}
    canonical = {**known, **{n: h(n, fork=1) for n in range(106, 112)}}
    check = detect_reorg(FakeChain(canonical), known, batch_blocks=2)
    assert check.reorged
    assert check.common_ancestor_block == 105
    assert check.rewind_to_block == 106
    assert check.changed_blocks == (106, 107, 108, 109)
    assert not check.deeper_than_memory


def test_shorter_chain_counts_as_changed():
    known = {n: h(n) for n in range(100, 110)}
    canonical = {n: known[n] for n in range(100, 107)}
    check = detect_reorg(FakeChain(canonical), known)
    assert check.rewind_to_block == 107


def test_reorg_deeper_than_the_remembered_window_rewinds_to_its_start():
    known = {n: h(n) for n in range(100, 110)}
    check = detect_reorg(FakeChain({n: h(n, fork=2) for n in range(90, 112)}), known)
    assert check.deeper_than_memory
    assert check.rewind_to_block == 100
    assert check.common_ancestor_block is None


def test_remembered_hashes_are_merged_trimmed_and_forgotten():
    known = {n: h(n) for n in range(0, 10)}
    merged = remember_block_hashes(known, {n: h(n, 1).upper().replace("0X", "0x") for n in range(8, 14)}, keep_blocks=6)
    assert sorted(merged) == list(range(8, 14))
    assert merged[8] == h(8, 1)
    assert forget_from(merged, 11) == {n: h(n, 1) for n in range(8, 11)}


def test_anvil_reorg_is_detected_and_rescanning_follows_the_new_chain(rpc, wallet, token, new_addresses):
    watched = new_addresses(1)
    start = rpc.block_number()  # one block before the transfer, so the fork point is within memory
    signed = wallet.sign(token.address, token.transfer_data(watched[0], 3_000_000))
    wallet.send_signed(signed)
    receipt = wallet.wait(signed.tx_hash)
    block = int(receipt["blockNumber"], 16)
    mine(rpc, 2)
    scanner = TransferScanner(rpc, ScannerConfig(tokens=(token.address,), hash_window_blocks=64))

    first = scanner.scan(ScanState(start), watched)
    assert [(t.tx_hash, t.block_number) for t in first.transfers] == [(signed.tx_hash, block)]
    known = remember_block_hashes({}, first.block_hashes)
    assert detect_reorg(rpc, known) == NO_REORG

    # The last three blocks (the transfer's and two empty ones) are replaced by empty blocks.
    reorg(rpc, 3)
    check = detect_reorg(rpc, known)
    assert check.reorged
    assert check.rewind_to_block == block
    assert check.common_ancestor_block == block - 1
    assert not check.deeper_than_memory
    assert non_canonical_blocks(rpc, [(block, first.transfers[0].block_hash)]) == {
        (block, first.transfers[0].block_hash)
    }

    assert check.rewind_to_block is not None
    known = forget_from(known, check.rewind_to_block)
    second = scanner.scan(ScanState(check.rewind_to_block), watched)
    assert second.transfers == [], "the transfer disappeared with its block"
    known = remember_block_hashes(known, second.block_hashes)

    # The same signed transaction comes back, in the second of two replaced blocks.
    reorg(rpc, 2, [(signed, 1)])
    check = detect_reorg(rpc, known)
    assert check.reorged
    head = rpc.block_number()
    assert check.rewind_to_block == head - 1
    assert check.rewind_to_block is not None
    third = scanner.scan(ScanState(check.rewind_to_block), watched)
    assert [t.tx_hash for t in third.transfers] == [signed.tx_hash]
    moved = third.transfers[0]
    assert moved.block_number == head
    assert moved.block_hash != first.transfers[0].block_hash
    assert moved.block_hash == rpc.block_header(head)["hash"]
    assert token.balance_units(watched[0]) == 3_000_000
    wallet.sync_nonce()
