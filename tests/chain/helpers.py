"""Shared helpers of the chain tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from chain.errors import ChainRangeTooLargeError
from chain.logs import TransferLog, decode_transfer_logs
from chain.rpc import BlockTag, ChainReader, RawLog, Topic
from chain.scanner import ScanResult, ScanState, TransferScanner


def receipt_transfers(receipt: dict[str, Any], chain_id: int = 31337) -> list[TransferLog]:
    return decode_transfer_logs(receipt["logs"], chain_id).transfers


def scan_until_caught_up(
    scanner: TransferScanner,
    state: ScanState,
    addresses: Sequence[str],
    *,
    to_block: int | None = None,
    max_rounds: int = 50,
) -> tuple[list[TransferLog], ScanState, list[ScanResult]]:
    """Repeated scans until the target is reached; returns (transfers, final state, results)."""
    found: list[TransferLog] = []
    results: list[ScanResult] = []
    for _ in range(max_rounds):
        result = scanner.scan(state, addresses, to_block=to_block)
        results.append(result)
        found.extend(result.transfers)
        state = result.state
        if result.caught_up:
            return found, state, results
    raise AssertionError("the scanner did not catch up")


class ForwardingReader:
    """A ChainReader that forwards every call to a real one (``inner``). Test doubles override its hooks:
    ``before_call`` runs before each call but chain_id's, ``before_logs`` and ``after_logs`` around each
    eth_getLogs (a hook that raises makes the call fail)."""

    def __init__(self, inner: ChainReader) -> None:
        self.inner = inner

    def before_call(self, method: str) -> None:
        pass

    def before_logs(self, from_block: int, to_block: int, topics: Sequence[Topic]) -> None:
        pass

    def after_logs(self, from_block: int, to_block: int, logs: list[RawLog]) -> None:
        pass

    def chain_id(self) -> int:
        return self.inner.chain_id()

    def block_number(self, tag: BlockTag = "latest") -> int:
        self.before_call("block_number")
        return self.inner.block_number(tag)

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        self.before_call("block_hashes")
        return self.inner.block_hashes(numbers)

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        address: str | Sequence[str] | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[RawLog]:
        self.before_call("get_logs")
        self.before_logs(from_block, to_block, topics)
        logs = self.inner.get_logs(from_block=from_block, to_block=to_block, address=address, topics=topics)
        self.after_logs(from_block, to_block, logs)
        return logs


def recipient_count(topics: Sequence[Topic]) -> int:
    """How many recipients an eth_getLogs query of Transfer logs names (its third topic)."""
    recipients = topics[2] if len(topics) > 2 and topics[2] is not None else []
    return len(recipients)


class WrappedRpc(ForwardingReader):
    """A ChainReader that forwards to a real one and records the eth_getLogs ranges asked."""

    def __init__(self, inner: ChainReader) -> None:
        super().__init__(inner)
        self.asked: list[tuple[int, int, int]] = []  # (from, to, number of recipient topics)
        self.answered: list[tuple[int, int, int]] = []  # (from, to, number of logs)

    def before_logs(self, from_block: int, to_block: int, topics: Sequence[Topic]) -> None:
        self.asked.append((from_block, to_block, recipient_count(topics)))
        self.before(from_block, to_block)

    def after_logs(self, from_block: int, to_block: int, logs: list[RawLog]) -> None:
        self.after(from_block, to_block, logs)
        self.answered.append((from_block, to_block, len(logs)))

    def before(self, from_block: int, to_block: int) -> None:
        pass

    def after(self, from_block: int, to_block: int, logs: list[RawLog]) -> None:
        pass


class RangeLimitedRpc(WrappedRpc):
    """Refuses eth_getLogs over more than ``max_blocks`` blocks, like a provider's range cap."""

    def __init__(self, inner: ChainReader, max_blocks: int) -> None:
        super().__init__(inner)
        self.max_blocks = max_blocks

    def before(self, from_block: int, to_block: int) -> None:
        if to_block - from_block + 1 > self.max_blocks:
            raise ChainRangeTooLargeError(f"block range is too wide (max {self.max_blocks})", method="eth_getLogs")


class ResultLimitedRpc(WrappedRpc):
    """Refuses eth_getLogs answers of more than ``max_logs`` logs ("query returned more than N results")."""

    def __init__(self, inner: ChainReader, max_logs: int) -> None:
        super().__init__(inner)
        self.max_logs = max_logs

    def after(self, from_block: int, to_block: int, logs: list[RawLog]) -> None:
        if len(logs) > self.max_logs:
            raise ChainRangeTooLargeError(f"query returned more than {self.max_logs} results", method="eth_getLogs")
