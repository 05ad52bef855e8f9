"""Helpers of finance's chain re-scan tests: blocks at chosen timestamps, readers with block headers, and the
mirror and pull as stored.

The node, wallet, tokens and rails are the chain and USDC tests' fixtures, re-exported here for the test module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken
from chain.logs import TransferLog
from chain.rpc import BlockHeader, BlockTag, ChainReader, ChainRpc, Topic
from services.core.db import unit_of_work
from services.finance.flows.chain_rescan import ChainRescanResult, chain_source, records_table, rescan_chain
from services.finance.pulls import PullState, get_pull
from services.usdc.crediting import deposit_reference
from tests.chain.conftest import anvil, other_token, rpc, token, wallet
from tests.chain.helpers import ForwardingReader, receipt_transfers, recipient_count
from tests.usdc.conftest import Rail, chain_settings_for, make_rail, own_chain, rail_settings

__all__ = [
    "ChainTime",
    "Sent",
    "WithHeaders",
    "anvil",
    "chain_settings_for",
    "make_rail",
    "mirror",
    "other_token",
    "own_chain",
    "pull_of",
    "rail_settings",
    "rescan",
    "rpc",
    "token",
    "wallet",
]


def latest_timestamp(rpc: ChainRpc) -> int:
    header = rpc.block_header("latest")
    assert header is not None
    return int(header["timestamp"], 16)


@dataclass(frozen=True)
class Sent:
    """A transfer as mined: its block and its decoded log."""

    block: int
    log: TransferLog

    @property
    def reference(self) -> str:
        return deposit_reference(self.log.chain_id, self.log.tx_hash, self.log.log_index)


class ChainTime:
    """Blocks at exact timestamps, counted in seconds from ``base`` (``offset`` seconds after the newest block when
    the test starts, so the test's window holds only the blocks it makes). Timestamps must not go backwards."""

    def __init__(self, rpc: ChainRpc, offset: int = 100) -> None:
        self.rpc = rpc
        self.base = latest_timestamp(rpc) + offset

    def at(self, seconds: int) -> datetime:
        return datetime.fromtimestamp(self.base + seconds, UTC)

    def mine(self, seconds: int, count: int = 1) -> int:
        """Mine ``count`` empty blocks, the first at ``seconds`` and each next one second later; returns the last."""
        for step in range(count):
            self.rpc.request("evm_mine", [self.base + seconds + step])
        return self.rpc.block_number()

    def send(self, token: LocalToken, to: str, value_units: int, seconds: int) -> Sent:
        """Transfer ``value_units`` of ``token`` to ``to`` in a block at ``seconds``."""
        self.rpc.request("evm_setNextBlockTimestamp", [self.base + seconds])
        receipt = token.transfer(to, value_units)
        (log,) = receipt_transfers(receipt, self.rpc.chain_id())
        return Sent(int(receipt["blockNumber"], 16), log)


class WithHeaders(ForwardingReader):
    """A ChainReader (a test double of the chain or USDC tests, or the node itself) with block headers from the
    node; counts the header reads and records the log queries' ranges."""

    def __init__(self, reader: ChainReader, node: ChainRpc) -> None:
        super().__init__(reader)
        self.node = node
        self.headers: list[int | str] = []
        self.log_queries: list[tuple[int, int, int]] = []  # (from, to, number of recipient topics)

    def block_header(self, block: int | BlockTag) -> BlockHeader | None:
        self.headers.append(block)
        return self.node.block_header(block)

    def before_logs(self, from_block: int, to_block: int, topics: Sequence[Topic]) -> None:
        self.log_queries.append((from_block, to_block, recipient_count(topics)))


def rescan(
    rail: Rail, reader: Any, start: datetime, end: datetime, *, now: datetime | None = None, **options: Any
) -> ChainRescanResult:
    return rescan_chain(rail.engine, rail.chain, reader, window_start=start, window_end=end, now=now, **options)


def mirror(engine: Engine, chain_id: int) -> list[Any]:
    """Every mirror row of the chain, by block and log index."""
    t = records_table
    with unit_of_work(engine) as session:
        stmt = select(t).where(t.c.chain_id == chain_id).order_by(t.c.block_number, t.c.log_index)
        return list(session.execute(stmt).all())


def pull_of(engine: Engine, chain_id: int, start: datetime, end: datetime) -> PullState:
    with unit_of_work(engine) as session:
        state = get_pull(session, chain_source(chain_id), start, end)
    assert state is not None
    return state
