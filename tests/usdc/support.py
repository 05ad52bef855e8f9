"""Helpers of the USDC rail tests: transfers that can be replayed in a reorg, and an RPC with a hook."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chain.devchain import LocalToken, SignedTx
from chain.errors import ChainResponseError
from chain.rpc import ChainReader
from tests.chain.helpers import ForwardingReader, WrappedRpc


def send_reverting_transfer(token: LocalToken, to: str) -> str:
    """A transfer beyond the sender's balance, sent with its gas given (no estimate, which would refuse it): mined,
    and reverted. Returns its hash once the node has its receipt."""
    tx_hash = token.wallet.send(token.address, token.transfer_data(to, 10**30), gas=200_000)
    deadline = time.monotonic() + 30
    while token.wallet.rpc.transaction_receipt(tx_hash) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"transaction {tx_hash} not mined")
    return tx_hash


def send_transfer(token: LocalToken, to: str, value_units: int) -> tuple[SignedTx, int]:
    """Transfer ``value_units`` of ``token`` to ``to``; returns the signed transaction (to replay it in a reorg)
    and the block it was mined in."""
    signed = token.wallet.sign(token.address, token.transfer_data(to, value_units))
    receipt = token.wallet.wait(token.wallet.send_signed(signed))
    return signed, int(receipt["blockNumber"], 16)


class HookedRpc(ForwardingReader):
    """A ChainReader forwarding to a real one, that runs ``hook`` once, before the call of ``method`` that follows
    ``after_calls`` calls of it."""

    def __init__(self, inner: ChainReader, method: str, hook: Callable[[], None], *, after_calls: int = 0) -> None:
        super().__init__(inner)
        self.method = method
        self.hook: Callable[[], None] | None = hook
        self.calls_left = after_calls

    def before_call(self, method: str) -> None:
        if method != self.method or self.hook is None:
            return
        if self.calls_left > 0:
            self.calls_left -= 1
            return
        hook, self.hook = self.hook, None
        hook()


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


class CountingRpc(ForwardingReader):
    """A ChainReader forwarding to a real one, counting the requests of each kind."""

    def __init__(self, inner: ChainReader) -> None:
        super().__init__(inner)
        self.calls: dict[str, int] = {}

    def before_call(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
