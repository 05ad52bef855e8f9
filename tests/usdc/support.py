"""Helpers of the USDC rail tests: transfers that can be replayed in a reorg, and an RPC with a hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chain.devchain import LocalToken, SignedTx
from chain.errors import ChainResponseError
from chain.rpc import BlockTag, ChainReader, RawLog, Topic
from tests.chain.helpers import WrappedRpc


def send_transfer(token: LocalToken, to: str, value_units: int) -> tuple[SignedTx, int]:
    """Transfer ``value_units`` of ``token`` to ``to``; returns the signed transaction (to replay it in a reorg)
    and the block it was mined in."""
    signed = token.wallet.sign(token.address, token.transfer_data(to, value_units))
    receipt = token.wallet.wait(token.wallet.send_signed(signed))
    return signed, int(receipt["blockNumber"], 16)


class HookedRpc:
    """A ChainReader forwarding to a real one, that runs ``hook`` once, before the call of ``method`` that follows
    ``after_calls`` calls of it."""

    def __init__(self, inner: ChainReader, method: str, hook: Callable[[], None], *, after_calls: int = 0) -> None:
        self.inner = inner
        self.method = method
        self.hook: Callable[[], None] | None = hook
        self.calls_left = after_calls

    def _before(self, method: str) -> None:
        if method != self.method or self.hook is None:
            return
        if self.calls_left > 0:
            self.calls_left -= 1
            return
        hook, self.hook = self.hook, None
        hook()

    def chain_id(self) -> int:
        return self.inner.chain_id()

    def block_number(self, tag: BlockTag = "latest") -> int:
        self._before("block_number")
        return self.inner.block_number(tag)

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        self._before("block_hashes")
        return self.inner.block_hashes(numbers)

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        address: str | Sequence[str] | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[RawLog]:
        self._before("get_logs")
        return self.inner.get_logs(from_block=from_block, to_block=to_block, address=address, topics=topics)


def conservation(deposit: Any) -> bool:
    """Nothing rounded away: amount == credits * 10,000 + carry out - carry in."""
    return int(deposit.amount_usdc_units) == (
        int(deposit.credits_minted) * 10_000 + int(deposit.carry_out_usdc_units) - int(deposit.carry_in_usdc_units)
    )


class FlakyRpc(WrappedRpc):
    """Every other ``eth_getLogs`` call fails (the second, the fourth ...), as an unreliable provider's would."""

    def __init__(self, inner: ChainReader) -> None:
        super().__init__(inner)
        self.calls = 0

    def before(self, from_block: int, to_block: int) -> None:
        self.calls += 1
        if self.calls % 2 == 0:
            raise ChainResponseError("temporarily unavailable", method="eth_getLogs")


class CountingRpc:
    """A ChainReader forwarding to a real one, counting the requests of each kind."""

    def __init__(self, inner: ChainReader) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1

    def chain_id(self) -> int:
        return self.inner.chain_id()

    def block_number(self, tag: BlockTag = "latest") -> int:
        self._count("block_number")
        return self.inner.block_number(tag)

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        self._count("block_hashes")
        return self.inner.block_hashes(numbers)

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        address: str | Sequence[str] | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[RawLog]:
        self._count("get_logs")
        return self.inner.get_logs(from_block=from_block, to_block=to_block, address=address, topics=topics)
