"""Finance's own re-scan of a chain: the USDC Transfer logs to deposit addresses in a period, read from the node.

Reconciliation compares the ledger with what the chain says, so this never reads the listener's tables
(``chain_cursors``, ``chain_blocks``, ``usdc_deposits``): only the registry of deposit addresses, and the node.

A period (``[window_start, window_end)``, UTC) maps to the blocks whose timestamps lie in it, found by binary search
over block timestamps (:func:`blocks_for_window`), and bounded by the chain's safe head: the latest block minus the
chain's confirmations, or the ``finalized`` block when the chain is configured so. The blocks are then scanned in
sub-ranges with the chain layer's :class:`~chain.scanner.TransferScanner` (bounded ``eth_getLogs`` ranges that
shrink when the provider refuses, the address list split over several queries, logs decoded from topics and data).
Each sub-range is fetched with no transaction open; then one unit of work replaces the mirror rows of that chain in
that sub-range by what was found (so a log reorganised away since an earlier scan disappears, and a re-run never
duplicates) and moves the pull's cursor (the next block) on.

Confirmations. A window is *settled* once a confirmed block lies at or after its end: block timestamps never
decrease, so every block of the window is then confirmed and the range is final. Only a settled window's pull is
finished. A window not settled yet (its end not reached, or its last blocks not confirmed) is scanned as far as the
safe head; its pull stays ``running`` with no cursor, so the next re-scan scans the whole window again from its
first block (catching any reorganisation since) and on to the new safe head. A re-scan interrupted by a node
failure is recorded ``failed`` with the error and its cursor, and the next re-scan resumes from that cursor.

The pull (``finance_pulls``, source ``chain:<chain id>``) records in ``details`` the window's block range
(``from_block``, ``to_block``), the ``safe_head`` it was bounded by, whether the window is ``settled``, the
scanner's current range size, and the block range the mirror was last written over for this window
(``claimed_from``/``claimed_to``): when a window's range shrinks (a reorganisation shortened the chain), the rows
left in blocks it no longer covers are deleted at the end of the pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, func, insert, not_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from chain.errors import ChainIdMismatchError, ChainInconsistentError, ChainRangeTooLargeError, ChainRpcError
from chain.logs import TransferLog
from chain.rpc import BlockHeader, BlockTag, ChainReader
from chain.scanner import ScannerConfig, ScanResult, ScanState, TransferScanner
from services.core import progress
from services.core.clock import utcnow
from services.core.db import table_of, unit_of_work, utc
from services.core.errors import UpstreamUnavailable
from services.core.settings import ChainSettings
from services.finance.models import ChainTransferRecord, PullStatus
from services.finance.pulls import PullState, begin_pull, fail_pull, finish_pull, pulls_table
from services.finance.rows import TransferRecordRow
from services.review.service import raise_exception, usdc_reference
from services.usdc.crediting import deposit_reference
from services.usdc.models import DepositAddress

log = logging.getLogger("creditrail.finance")

AMOUNT_OUT_OF_RANGE = "transfer_amount_out_of_range"
"""The finance exception a re-scan raises for a transfer beyond a 64-bit amount (it stays out of the mirror)."""
BIGINT_MAX = 2**63 - 1

records_table = table_of(ChainTransferRecord)
deposit_addresses_table = table_of(DepositAddress)

# eth_getLogs calls per sub-range (each over at most the chain's max_range_blocks): one sub-range is stored, and the
# cursor moved, per unit of work. Enough calls for the range to shrink from thousands of blocks to one.
CALLS_PER_SUBRANGE = 32
# Recipient addresses per eth_getLogs query (providers limit the length of a topic list).
ADDRESSES_PER_QUERY = 500
# Sub-ranges in a row that end without progress (every call refused) before giving up.
_MAX_STALLS = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BlockHeaderReader(Protocol):
    """Reads one block's header (``eth_getBlockByNumber``), as :meth:`chain.rpc.ChainRpc.block_header` does."""

    def block_header(self, block: int | BlockTag) -> BlockHeader | None: ...


class RescanReader(ChainReader, BlockHeaderReader, Protocol):
    """What a re-scan needs from a node: logs, block numbers and headers (:class:`chain.rpc.ChainRpc`)."""


class ChainRescanFailed(UpstreamUnavailable):
    """The node failed during a re-scan; the pull records the error and a re-run resumes from its cursor."""

    code = "chain_rescan_failed"


@dataclass(frozen=True, slots=True)
class WindowBlocks:
    """A window mapped onto a chain: its confirmed blocks ``first_block..last_block`` (``None`` when it holds no
    confirmed block), the safe head that bounded the search, and whether the window is settled (a confirmed block
    lies at or after its end, so no later block can fall in it)."""

    first_block: int | None
    last_block: int | None
    safe_head: int
    settled: bool

    @property
    def block_range(self) -> tuple[int, int] | None:
        if self.first_block is None or self.last_block is None:
            return None
        return (self.first_block, self.last_block)


@dataclass(frozen=True, slots=True)
class ChainRescanResult:
    """What :func:`rescan_chain` did.

    - ``from_block``/``to_block``: the window's confirmed block range (``None`` when it holds no confirmed block).
      The mirror (``chain_transfer_records`` of ``chain_id`` with ``block_number`` in it) now holds the window's
      transfers to deposit addresses; ``transfers`` counts them.
    - ``complete``: the window is settled and fully scanned, so the mirror holds its transfers for good. When false,
      the window's last blocks are not confirmed yet (or it has not ended): the next re-scan scans it again.
    - ``already_complete``: the pull was complete before this call, so nothing was fetched.
    - ``resumed_from``: the block this call resumed from after an interrupted re-scan (``None`` for a full pass).
    - ``scanned_blocks``, ``calls``, ``shrinks``: this call's work (blocks scanned, eth_getLogs calls, range
      reductions after a provider's refusal).
    """

    chain_id: int
    pull_id: int
    window_start: datetime
    window_end: datetime
    from_block: int | None
    to_block: int | None
    safe_head: int | None
    complete: bool
    already_complete: bool
    transfers: int
    resumed_from: int | None
    scanned_blocks: int
    calls: int
    shrinks: int


def chain_source(chain_id: int) -> str:
    """The pull source of a chain's re-scans."""
    return f"chain:{chain_id}"


def safe_head_block(reader: ChainReader, chain: ChainSettings) -> int:
    """The newest block the chain's settings treat as final: ``finalized``, or latest minus the confirmations
    (-1 when the chain is shorter than that)."""
    if chain.use_finalized:
        return reader.block_number("finalized")
    return reader.block_number("latest") - chain.confirmations


def _ceil_seconds(moment: datetime) -> int:
    """The smallest whole Unix second not before ``moment`` (integer arithmetic, no float)."""
    delta = utc(moment) - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds + 1 if delta.microseconds else seconds


class _Timestamps:
    """Block timestamps read on demand (one ``eth_getBlockByNumber`` per block at most)."""

    def __init__(self, reader: BlockHeaderReader) -> None:
        self.reader = reader
        self.known: dict[int, int] = {}

    def __call__(self, number: int) -> int:
        cached = self.known.get(number)
        if cached is not None:
            return cached
        header = self.reader.block_header(number)
        if header is None or not isinstance(header.get("timestamp"), str):
            raise ChainInconsistentError(
                f"the node has no block {number}, below its safe head", method="eth_getBlockByNumber"
            )
        value = int(header["timestamp"], 16)
        self.known[number] = value
        return value


def _first_at_or_after(timestamp_of: Callable[[int], int], low: int, high: int, target: int) -> int:
    """The first block in ``low..high`` whose timestamp is at least ``target`` (``high + 1`` if none); timestamps
    never decrease with the block number."""
    lo, hi = low, high + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if timestamp_of(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def map_window(
    reader: BlockHeaderReader, window_start: datetime, window_end: datetime, *, safe_head: int
) -> WindowBlocks:
    """The window's blocks up to ``safe_head`` and whether it is settled; about 2 log2(safe_head) header reads."""
    if safe_head < 0:
        return WindowBlocks(None, None, safe_head, False)
    start_s, end_s = _ceil_seconds(window_start), _ceil_seconds(window_end)
    timestamp_of = _Timestamps(reader)
    head_ts = timestamp_of(safe_head)
    settled = head_ts >= end_s
    if head_ts < start_s:
        return WindowBlocks(None, None, safe_head, settled)
    first = _first_at_or_after(timestamp_of, 0, safe_head, start_s)
    if timestamp_of(first) >= end_s:
        return WindowBlocks(None, None, safe_head, settled)
    last = safe_head if not settled else _first_at_or_after(timestamp_of, first + 1, safe_head, end_s) - 1
    return WindowBlocks(first, last, safe_head, settled)


def blocks_for_window(
    reader: BlockHeaderReader, window_start: datetime, window_end: datetime, *, safe_head: int
) -> tuple[int, int] | None:
    """The blocks ``(first, last)`` whose timestamps lie in ``[window_start, window_end)``, among blocks up to
    ``safe_head``; ``None`` when the window holds no such block yet. Binary search over block timestamps: O(log n)
    ``eth_getBlockByNumber`` calls."""
    return map_window(reader, window_start, window_end, safe_head=safe_head).block_range


def mirror_records(session: Session, chain_id: int, from_block: int, to_block: int) -> list[TransferRecordRow]:
    """The mirror's rows of a chain in ``from_block..to_block``, by block and log index."""
    t = records_table
    return list(
        session.execute(
            select(t)
            .where(t.c.chain_id == chain_id, t.c.block_number >= from_block, t.c.block_number <= to_block)
            .order_by(t.c.block_number, t.c.log_index)
        ).all()
    )


def rescan_chain(
    engine: Engine,
    chain: ChainSettings,
    reader: RescanReader,
    *,
    window_start: datetime,
    window_end: datetime,
    now: datetime | None = None,
    calls_per_subrange: int = CALLS_PER_SUBRANGE,
    addresses_per_query: int = ADDRESSES_PER_QUERY,
) -> ChainRescanResult:
    """Re-scan ``chain`` for the window's USDC Transfers to deposit addresses into ``chain_transfer_records``;
    see the module's docstring. A pull already complete is not fetched again (``already_complete``).

    ``now`` (default: the clock at each write) stamps the pull and the rows. ``calls_per_subrange`` bounds the
    ``eth_getLogs`` calls stored per unit of work; ``addresses_per_query`` the recipients per call. Raises
    :class:`ChainRescanFailed` (after recording the error on the pull) when the node fails; a re-run resumes from
    the pull's cursor.
    """
    if calls_per_subrange < 1 or addresses_per_query < 1:
        raise ValueError("calls_per_subrange and addresses_per_query must be at least 1")
    clock = utcnow if now is None else _fixed_clock(now)
    window_start, window_end = utc(window_start), utc(window_end)
    source = chain_source(chain.chain_id)
    with unit_of_work(engine) as session:
        pull = begin_pull(session, source, window_start, window_end, now=clock())
    if pull.complete:
        return _already_complete(engine, chain.chain_id, pull)
    pass_ = _Pass(engine, chain, reader, pull, clock, calls_per_subrange, addresses_per_query)
    try:
        return pass_.run()
    except Exception as exc:
        _record_failure(engine, pull.id, exc, clock())
        if isinstance(exc, ChainRpcError):
            where = "before scanning" if pass_.next_block is None else f"at block {pass_.next_block}"
            raise ChainRescanFailed(
                f"re-scan of chain {chain.chain_id} for {window_start.isoformat()} .. {window_end.isoformat()} "
                f"stopped {where}: {exc}",
                chain_id=chain.chain_id,
                window_start=window_start.isoformat(),
                window_end=window_end.isoformat(),
                next_block=pass_.next_block,
                error=type(exc).__name__,
            ) from exc
        raise


def _record_failure(engine: Engine, pull_id: int, error: Exception, now: datetime) -> None:
    """Record the error on the pull; if even that fails (the database is down too), the caller's error still wins."""
    try:
        with unit_of_work(engine) as session:
            fail_pull(session, pull_id, error=f"{type(error).__name__}: {error}", now=now)
    except Exception:
        log.exception("could not record the failure of finance pull %s", pull_id)


def _fixed_clock(moment: datetime) -> Callable[[], datetime]:
    def clock() -> datetime:
        return moment

    return clock


def _already_complete(engine: Engine, chain_id: int, pull: PullState) -> ChainRescanResult:
    details = pull.details
    from_block, to_block = details.get("from_block"), details.get("to_block")
    transfers = 0
    if from_block is not None and to_block is not None:
        with unit_of_work(engine) as session:
            transfers = _count(session, chain_id, int(from_block), int(to_block))
    return ChainRescanResult(
        chain_id=chain_id,
        pull_id=pull.id,
        window_start=pull.window_start,
        window_end=pull.window_end,
        from_block=from_block,
        to_block=to_block,
        safe_head=details.get("safe_head"),
        complete=True,
        already_complete=True,
        transfers=transfers,
        resumed_from=None,
        scanned_blocks=0,
        calls=0,
        shrinks=0,
    )


def _count(session: Session, chain_id: int, from_block: int, to_block: int) -> int:
    t = records_table
    return int(
        session.execute(
            select(func.count())
            .select_from(t)
            .where(t.c.chain_id == chain_id, t.c.block_number >= from_block, t.c.block_number <= to_block)
        ).scalar_one()
    )


def _in_range(from_block: int, to_block: int) -> ColumnElement[bool]:
    return and_(records_table.c.block_number >= from_block, records_table.c.block_number <= to_block)


class _Pass:
    """One call of :func:`rescan_chain` past the pull's start: map, scan sub-ranges, end the pass."""

    def __init__(
        self,
        engine: Engine,
        chain: ChainSettings,
        reader: RescanReader,
        pull: PullState,
        clock: Callable[[], datetime],
        calls_per_subrange: int,
        addresses_per_query: int,
    ) -> None:
        self.engine = engine
        self.chain = chain
        self.chain_id = chain.chain_id
        self.reader = reader
        self.pull = pull
        self.clock = clock
        self.calls_per_subrange = calls_per_subrange
        self.addresses_per_query = addresses_per_query
        self.next_block: int | None = None
        self.calls = 0
        self.shrinks = 0
        self.scanned_blocks = 0

    def run(self) -> ChainRescanResult:
        actual = self.reader.chain_id()
        if actual != self.chain_id:
            raise ChainIdMismatchError(expected_chain_id=self.chain_id, actual_chain_id=actual)
        safe_head = safe_head_block(self.reader, self.chain)
        window = map_window(self.reader, self.pull.window_start, self.pull.window_end, safe_head=safe_head)
        # Read after the safe head: an address created later can only receive transfers in later blocks.
        with unit_of_work(self.engine) as session:
            watched = _deposit_addresses(session)

        previous = self.pull.details
        resumed_from = self._resume_point(window, previous)
        range_blocks = int(previous.get("range_blocks") or self.chain.max_range_blocks)
        claimed = _merge_claims(previous, window)
        details: dict[str, Any] = {
            "from_block": window.first_block,
            "to_block": window.last_block,
            "safe_head": window.safe_head,
            "settled": window.settled,
            "range_blocks": range_blocks,
            "claimed_from": claimed[0] if claimed else None,
            "claimed_to": claimed[1] if claimed else None,
            "deposit_addresses": len(watched),
        }
        with unit_of_work(self.engine) as session:
            self._start(session, details, restart=resumed_from is None)

        if window.first_block is not None and window.last_block is not None:
            self.next_block = window.first_block if resumed_from is None else resumed_from
            self._scan(window.last_block, watched, range_blocks, details)

        with unit_of_work(self.engine) as session:
            transfers = self._end(session, window, claimed, details)
        return ChainRescanResult(
            chain_id=self.chain_id,
            pull_id=self.pull.id,
            window_start=self.pull.window_start,
            window_end=self.pull.window_end,
            from_block=window.first_block,
            to_block=window.last_block,
            safe_head=window.safe_head,
            complete=window.settled,
            already_complete=False,
            transfers=transfers,
            resumed_from=resumed_from,
            scanned_blocks=self.scanned_blocks,
            calls=self.calls,
            shrinks=self.shrinks,
        )

    def _resume_point(self, window: WindowBlocks, previous: dict[str, Any]) -> int | None:
        """The block an interrupted pass of this window stopped at, if it still fits the window's range."""
        cursor = self.pull.cursor
        if cursor is None or window.first_block is None or window.last_block is None:
            return None
        block = int(cursor)
        if previous.get("from_block") != window.first_block or not window.first_block <= block <= window.last_block + 1:
            return None
        return block

    def _start(self, session: Session, details: dict[str, Any], *, restart: bool) -> None:
        values: dict[str, Any] = {"details": details, "updated_at": self.clock()}
        if restart:
            values.update(cursor=None, pages=0, records=0)
        session.execute(update(pulls_table).where(pulls_table.c.id == self.pull.id).values(**values))

    def _scan(self, last_block: int, watched: Sequence[str], range_blocks: int, details: dict[str, Any]) -> None:
        config = ScannerConfig(
            tokens=(self.chain.usdc_address,),
            max_range_blocks=self.chain.max_range_blocks,
            max_addresses_per_query=self.addresses_per_query,
            # The blocks are confirmed; a reorganisation deeper than that before the window settles is caught by
            # the next pass, which scans the window again.
            hash_window_blocks=0,
            max_calls_per_scan=self.calls_per_subrange,
        )
        scanner = TransferScanner(self.reader, config, chain_id=self.chain_id)
        assert self.next_block is not None
        state = ScanState(self.next_block, min(range_blocks, config.max_range_blocks))
        stalls = 0
        first_block, task = self.next_block, f"re-scanning chain {self.chain_id} (blocks)"
        progress.report(task, 0, last_block - first_block + 1)
        while state.next_block <= last_block:
            result = scanner.scan(state, watched, to_block=last_block)
            self.calls += result.calls
            self.shrinks += result.shrinks
            state = result.state
            details = {**details, "range_blocks": state.range_blocks}
            if result.to_block >= result.from_block:
                stalls = 0
                with unit_of_work(self.engine) as session:
                    self._store(session, result, details)
                self.next_block = state.next_block
                self.scanned_blocks += result.scanned_blocks
                progress.report(task, state.next_block - first_block, last_block - first_block + 1)
            else:
                stalls += 1
            if result.interrupted_by is not None:
                raise result.interrupted_by
            if stalls > _MAX_STALLS:
                raise ChainRangeTooLargeError(
                    f"the node refused every log query from block {state.next_block}, down to one block",
                    method="eth_getLogs",
                )

    def _store(self, session: Session, result: ScanResult, details: dict[str, Any]) -> None:
        """One sub-range: replace the mirror's rows of the chain in it by what the node returned, move the cursor.
        A transfer beyond what the mirror's 64-bit amounts hold is left out of it and raised as an exception."""
        t = records_table
        rows = _record_rows(result.transfers, self.chain_id, self.clock())
        for row in [row for row in rows if row["amount_usdc_units"] > BIGINT_MAX]:
            rows.remove(row)
            raise_exception(
                session,
                rail="usdc",
                kind=AMOUNT_OUT_OF_RANGE,
                reference=usdc_reference(self.chain_id, row["tx_hash"], row["log_index"]),
                now=self.clock(),
                details={
                    "amount_usdc_units": str(row["amount_usdc_units"]),
                    "to_address": row["to_address"],
                    "block_number": row["block_number"],
                    "pull_id": self.pull.id,
                },
            )
        session.execute(delete(t).where(t.c.chain_id == self.chain_id, _in_range(result.from_block, result.to_block)))
        if rows:
            session.execute(insert(t), rows)
        p = pulls_table
        session.execute(
            update(p)
            .where(p.c.id == self.pull.id)
            .values(
                cursor=str(result.to_block + 1),
                pages=p.c.pages + 1,
                records=p.c.records + len(rows),
                details=details,
                updated_at=self.clock(),
            )
        )

    def _end(
        self, session: Session, window: WindowBlocks, claimed: tuple[int, int] | None, details: dict[str, Any]
    ) -> int:
        """Drop rows in blocks the window no longer covers; finish the pull if the window is settled, else leave it
        running with no cursor (the next re-scan starts the window over). Returns the window's mirror rows."""
        t = records_table
        block_range = window.block_range
        if claimed is not None:
            stale = _in_range(*claimed)
            if block_range is not None:
                stale = and_(stale, not_(_in_range(*block_range)))
            session.execute(delete(t).where(t.c.chain_id == self.chain_id, stale))
        details = {
            **details,
            "claimed_from": block_range[0] if block_range else None,
            "claimed_to": block_range[1] if block_range else None,
        }
        if window.settled:
            finish_pull(session, self.pull.id, now=self.clock(), details=details)
        else:
            p = pulls_table
            session.execute(
                update(p)
                .where(p.c.id == self.pull.id)
                .values(
                    status=PullStatus.RUNNING,
                    cursor=None,
                    details=details,
                    last_error=None,
                    updated_at=self.clock(),
                )
            )
        return 0 if block_range is None else _count(session, self.chain_id, *block_range)


def _merge_claims(previous: dict[str, Any], window: WindowBlocks) -> tuple[int, int] | None:
    """The blocks the mirror may hold rows of for this window: what earlier passes covered, and this one."""
    bounds: list[tuple[int, int]] = []
    for low_key, high_key in (("claimed_from", "claimed_to"), ("from_block", "to_block")):
        low, high = previous.get(low_key), previous.get(high_key)
        if low is not None and high is not None:
            bounds.append((int(low), int(high)))
    if window.block_range is not None:
        bounds.append(window.block_range)
    if not bounds:
        return None
    return (min(low for low, _ in bounds), max(high for _, high in bounds))


def _deposit_addresses(session: Session) -> list[str]:
    """Every deposit address, whatever chain it was asked for: an account's address is the same on every chain, and
    a transfer to it on any configured chain is a deposit."""
    t = deposit_addresses_table
    found = session.execute(select(t.c.address).distinct()).scalars()
    return sorted({str(address).lower() for address in found})


def _record_rows(transfers: Iterable[TransferLog], chain_id: int, scanned_at: datetime) -> list[dict[str, Any]]:
    """Mirror rows of the non-zero transfers (the scanner already kept only the chain's USDC to watched
    addresses), once per log."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for log in transfers:
        if log.is_zero_value:
            continue
        rows[(log.tx_hash, log.log_index)] = {
            "chain_id": chain_id,
            "tx_hash": log.tx_hash,
            "log_index": log.log_index,
            "block_number": log.block_number,
            "block_hash": log.block_hash,
            "from_address": log.from_address,
            "to_address": log.to_address,
            "amount_usdc_units": log.value_units,
            "reference": deposit_reference(chain_id, log.tx_hash, log.log_index),
            "scanned_at": scanned_at,
        }
    return list(rows.values())
