"""A scanner of ERC-20 ``Transfer`` logs to a set of addresses, over bounded block ranges from a checkpoint.

The caller owns the state (:class:`ScanState`, plain data: the next block to scan and the current range size) and
persists it; :meth:`TransferScanner.scan` takes a state and returns the logs found plus the new state. It never
relies on node-side filters or subscriptions.

Each ``eth_getLogs`` call covers ``range_blocks`` blocks. When the node refuses a query as too large or times out,
the range halves (down to one block, then the address list is split further); when a call comes back with few
logs, the range doubles, up to a maximum. With ``target_logs_per_scan`` set, a call that brought more logs than that
narrows the next range to what should hold about that many at the density just seen, and a scan ends once it holds
that many: the caller gets batches of a bounded size (to store one while the next is fetched) however dense the
chain. Long address lists are split into several queries per range (providers limit the size of a topic list).

Near the head, the scanner also reads the canonical hashes of the blocks it scanned (``block_hashes`` in the result)
and checks the logs it got against them, so the caller can detect a later reorganisation with
:func:`chain.reorg.detect_reorg`. Blocks given as ``recheck`` (the ones a scan builds on, say) have their hashes read
again once the scan's logs are in, in the same request as its last block hashes when it reads any
(``rechecked_hashes`` in the result): a reorganisation during the scan is noticed without a call of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chain.abi import TRANSFER_TOPIC
from chain.addresses import normalize_address
from chain.errors import (
    ChainInconsistentError,
    ChainRangeTooLargeError,
    ChainRpcError,
    ChainTimeoutError,
)
from chain.logs import TransferLog, decode_transfer_logs
from chain.rpc import BlockTag, ChainReader, RawLog

DEFAULT_INITIAL_RANGE_BLOCKS = 100
_ADDRESS_TOPIC_PAD = "0x" + "0" * 24


@dataclass(frozen=True)
class ScanState:
    """Where a scan stands: ``next_block`` is the first block not yet scanned (the checkpoint); ``range_blocks`` is
    the number of blocks the next ``eth_getLogs`` call will cover (adapted as the node answers).
    """

    next_block: int
    range_blocks: int = DEFAULT_INITIAL_RANGE_BLOCKS

    def __post_init__(self) -> None:
        if self.next_block < 0:
            raise ValueError("next_block must not be negative")
        if self.range_blocks < 1:
            raise ValueError("range_blocks must be at least 1")

    def to_dict(self) -> dict[str, int]:
        return {"next_block": self.next_block, "range_blocks": self.range_blocks}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanState:
        return cls(
            next_block=int(data["next_block"]),
            range_blocks=int(data.get("range_blocks", DEFAULT_INITIAL_RANGE_BLOCKS)),
        )


@dataclass(frozen=True)
class ScannerConfig:
    """How to scan one chain.

    - ``tokens``: the token contracts to read logs of; ``None`` for any contract (then every result carries its
      ``token`` and the caller must check it).
    - The target block is ``block_number(head_tag) - confirmations``: ``head_tag`` "latest" with a number of
      confirmations, or "safe"/"finalized" (usually with no further confirmations).
    - ``min_range_blocks``/``max_range_blocks``: bounds of the adaptive range. A call returning fewer than
      ``grow_below_logs`` logs doubles the range.
    - ``max_addresses_per_query``: longer recipient lists are split over several queries per range.
    - ``hash_window_blocks``: canonical hashes are read for the scanned blocks within this many blocks of the
      target, for reorganisation detection (0 turns it off).
    - ``max_calls_per_scan`` bounds the ``eth_getLogs`` calls of one :meth:`TransferScanner.scan` (one batch).
    - ``target_logs_per_scan``: a scan ends after the call that brings it to this many logs, and a call that returned
      more narrows the next range in proportion (not below ``min_range_blocks``; the ceiling that refusals set is
      left alone). ``None``: scans are bounded by calls only, and only refusals narrow the range.
    """

    tokens: tuple[str, ...] | None
    confirmations: int = 0
    head_tag: BlockTag = "latest"
    min_range_blocks: int = 1
    max_range_blocks: int = 5_000
    grow_below_logs: int = 2_000
    max_addresses_per_query: int = 500
    hash_window_blocks: int = 64
    max_calls_per_scan: int = 100
    target_logs_per_scan: int | None = None

    def __post_init__(self) -> None:
        if self.tokens is not None:
            object.__setattr__(self, "tokens", tuple(normalize_address(token) for token in self.tokens))
        if self.confirmations < 0:
            raise ValueError("confirmations must not be negative")
        if not 1 <= self.min_range_blocks <= self.max_range_blocks:
            raise ValueError("need 1 <= min_range_blocks <= max_range_blocks")
        if self.max_addresses_per_query < 1:
            raise ValueError("max_addresses_per_query must be at least 1")
        if self.hash_window_blocks < 0 or self.max_calls_per_scan < 1 or self.grow_below_logs < 0:
            raise ValueError("hash_window_blocks, grow_below_logs must be >= 0 and max_calls_per_scan >= 1")
        if self.target_logs_per_scan is not None and self.target_logs_per_scan < 1:
            raise ValueError("target_logs_per_scan must be at least 1")


@dataclass(frozen=True)
class ScanResult:
    """What one :meth:`TransferScanner.scan` found.

    - ``transfers``: the ``Transfer`` logs in ``from_block..to_block``, ordered by block then log index. Zero-value
      transfers are included (``TransferLog.is_zero_value``), and so are other tokens' when ``tokens`` is ``None``.
    - ``state``: the new state to persist; ``state.next_block == to_block + 1``.
    - ``block_hashes``: canonical hashes of the scanned blocks near the target, consistent with ``transfers``.
    - ``caught_up``: the scan reached ``target_block``.
    - ``interrupted_by``: set when a node error stopped the scan after some progress (the progress is kept); with
      no progress the error is raised instead.
    - ``rechecked_hashes``: the canonical hashes of the ``recheck`` blocks (``None`` for a block the node lacks),
      read after the scan's last logs; empty when the scan scanned nothing or the node failed to answer.
    """

    transfers: list[TransferLog]
    state: ScanState
    from_block: int
    to_block: int
    target_block: int
    block_hashes: dict[int, str] = field(default_factory=dict)
    caught_up: bool = True
    interrupted_by: ChainRpcError | None = None
    calls: int = 0
    shrinks: int = 0
    skipped_logs: int = 0
    rechecked_hashes: dict[int, str | None] = field(default_factory=dict)

    @property
    def scanned_blocks(self) -> int:
        return max(0, self.to_block - self.from_block + 1)


class TransferScanner:
    """Scans one chain for ERC-20 ``Transfer`` logs to watched addresses. Holds no mutable state of its own."""

    def __init__(self, rpc: ChainReader, config: ScannerConfig, *, chain_id: int | None = None) -> None:
        self.rpc = rpc
        self.config = config
        self._chain_id = chain_id

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    def target_block(self) -> int:
        """The last block a scan may cover now: ``head_tag``'s number minus ``confirmations`` (-1 if none)."""
        return self.rpc.block_number(self.config.head_tag) - self.config.confirmations

    def scan(
        self,
        state: ScanState,
        addresses: Iterable[str] | None,
        *,
        to_block: int | None = None,
        recheck: Iterable[int] = (),
    ) -> ScanResult:
        """Scan from ``state.next_block`` towards the target (or ``to_block``, which must not exceed the node's
        head), in at most ``max_calls_per_scan`` calls.

        ``addresses``: recipients to watch (``None`` for all recipients, which needs ``tokens``). ``recheck``: block
        numbers whose hashes to read again after the scan's logs (see ``ScanResult.rechecked_hashes``). Raises a
        :class:`~chain.errors.ChainRpcError` if the node fails before any progress; ``state`` is never modified.
        """
        config = self.config
        if addresses is None and config.tokens is None:
            raise ValueError("scanning every recipient of every contract: give addresses or tokens")
        chain_id = self.chain_id
        target = self.target_block() if to_block is None else to_block
        watched = None if addresses is None else sorted({normalize_address(a) for a in addresses})
        range_blocks = min(max(state.range_blocks, config.min_range_blocks), config.max_range_blocks)
        start = state.next_block
        first = start
        recheck_blocks = sorted(set(recheck))
        if start > target:
            return ScanResult([], replace(state, range_blocks=range_blocks), first, start - 1, target)
        if watched is not None and not watched:
            # Nothing to watch yet: no log can concern us, so the range is scanned by definition.
            hashes, read_again = self._hashes(start, target, target, recheck_blocks)
            return ScanResult(
                [],
                ScanState(target + 1, range_blocks),
                first,
                target,
                target,
                hashes,
                rechecked_hashes=read_again or {},
            )

        watched_topics = None if watched is None else [_ADDRESS_TOPIC_PAD + a[2:] for a in watched]
        address_chunk = config.max_addresses_per_query
        ceiling = config.max_range_blocks  # the largest span not refused during this scan
        transfers: list[TransferLog] = []
        hashes_out: dict[int, str] = {}
        calls = shrinks = skipped = fetched = 0
        target_logs = config.target_logs_per_scan
        # The recheck blocks' hashes as read with the last call's block hashes (None if that call read none).
        rechecked: dict[int, str | None] | None = None
        error: ChainRpcError | None = None
        token_set = None if config.tokens is None else frozenset(config.tokens)
        watched_set = None if watched is None else frozenset(watched)
        while start <= target and calls < config.max_calls_per_scan:
            end = min(target, start + range_blocks - 1)
            try:
                raws, used_calls = self._fetch(start, end, watched_topics, address_chunk)
            except (ChainRangeTooLargeError, ChainTimeoutError) as exc:
                calls += 1
                shrinks += 1
                span = end - start + 1
                ceiling = min(ceiling, max(config.min_range_blocks, span - 1))
                narrower = max(config.min_range_blocks, span // 2)
                if narrower < span:
                    range_blocks = narrower
                    continue
                if watched is not None and address_chunk > 1 and len(watched) > 1:
                    address_chunk = max(1, min(address_chunk, len(watched)) // 2)
                    continue
                error = exc
                break
            except ChainRpcError as exc:
                error = exc
                break
            calls += used_calls
            decoded = decode_transfer_logs(raws, chain_id, tokens=token_set, recipients=watched_set)
            chunk = decoded.transfers
            skipped += decoded.not_erc20_count + decoded.removed_count + decoded.unwanted_count
            try:
                hashes, read_again = self._hashes(start, end, target, recheck_blocks, optional_recheck=True)
                _check_consistent(chunk, hashes)
            except ChainRpcError as exc:
                error = exc
                break
            rechecked = read_again
            transfers.extend(chunk)
            hashes_out.update(hashes)
            span = end - start + 1
            start = end + 1
            fetched += len(raws)
            if target_logs is not None and len(raws) > target_logs:
                range_blocks = max(config.min_range_blocks, span * target_logs // len(raws))
            elif len(raws) < config.grow_below_logs:
                range_blocks = min(ceiling, range_blocks * 2)
            if target_logs is not None and fetched >= target_logs:
                break

        if error is not None and start == first:
            raise error
        if recheck_blocks and rechecked is None:
            try:
                rechecked = self.rpc.block_hashes(recheck_blocks)
            except ChainRpcError:
                rechecked = {}  # not read: the caller checks them itself
        return ScanResult(
            transfers=transfers,
            state=ScanState(start, range_blocks),
            from_block=first,
            to_block=start - 1,
            target_block=target,
            block_hashes=hashes_out,
            caught_up=start > target,
            interrupted_by=error,
            calls=calls,
            shrinks=shrinks,
            skipped_logs=skipped,
            rechecked_hashes=rechecked or {},
        )

    def _fetch(
        self, start: int, end: int, watched_topics: Sequence[str] | None, address_chunk: int
    ) -> tuple[list[RawLog], int]:
        address: str | tuple[str, ...] | None = None
        tokens = self.config.tokens
        if tokens is not None:
            address = tokens[0] if len(tokens) == 1 else tokens
        if watched_topics is None:
            return self.rpc.get_logs(from_block=start, to_block=end, address=address, topics=[TRANSFER_TOPIC]), 1
        raws: list[RawLog] = []
        calls = 0
        for offset in range(0, len(watched_topics), address_chunk):
            to_topics = list(watched_topics[offset : offset + address_chunk])
            raws.extend(
                self.rpc.get_logs(
                    from_block=start, to_block=end, address=address, topics=[TRANSFER_TOPIC, None, to_topics]
                )
            )
            calls += 1
        if calls > 1:
            raws.sort(key=_raw_order)
        return raws, calls

    def _hashes(
        self, start: int, end: int, target: int, recheck: Sequence[int], *, optional_recheck: bool = False
    ) -> tuple[dict[int, str], dict[int, str | None] | None]:
        """The canonical hashes of the blocks ``start..end`` within the hash window of ``target``, and of the
        ``recheck`` blocks, in one request. With ``optional_recheck``, no request is made for the recheck blocks
        alone (their hashes are then ``None``: the caller reads them later)."""
        window = self.config.hash_window_blocks
        low = max(start, target - window + 1)
        scanned = range(low, end + 1) if window and low <= end else range(0)
        if not scanned and optional_recheck:
            return {}, None
        if not scanned and not recheck:
            return {}, {}
        hashes = self.rpc.block_hashes([*scanned, *recheck])
        missing = [number for number in scanned if hashes.get(number) is None]
        if missing:
            raise ChainInconsistentError(f"the node does not know block {missing[0]} it just scanned")
        window_hashes = {number: value for number in scanned if (value := hashes.get(number)) is not None}
        return window_hashes, {number: hashes.get(number) for number in recheck}


def _raw_order(raw: RawLog) -> tuple[int, int]:
    return int(raw["blockNumber"], 16), int(raw["logIndex"], 16)


def _check_consistent(transfers: Sequence[TransferLog], hashes: Mapping[int, str]) -> None:
    if not hashes:
        return
    for log in transfers:
        known = hashes.get(log.block_number)
        if known is not None and known != log.block_hash:
            raise ChainInconsistentError(
                f"block {log.block_number} changed hash while being scanned ({log.block_hash} -> {known})"
            )
