"""The USDC listener: one poll of one chain, and the confirmation pass that credits deposits.

Each step reads what it needs in a short unit of work, talks to the node with no transaction open, then writes its
results in another unit of work. The stored cursor and recent block hashes are the only state, so a poll killed
anywhere resumes from the last committed cursor, and storing a log twice is impossible (unique chain id, tx hash and
log index). Node-side filters and subscriptions are never used: ``eth_getLogs`` over bounded ranges is the truth.

Reorgs: before each scan the newest stored block hash is compared with the node's (chain.reorg.detect_reorg), and
again after the scan, before anything is stored (a reorg during the scan would otherwise leave the hashes of two
chains stored and go unnoticed). When it changed, the cursor rewinds to the fork point: deposits at or above it
whose block is no longer canonical are orphaned if they were only observed (a rescan revives them if they are still
in the chain, in whatever block they landed), and undone if they were credited (clawback and a finance exception:
the reorg was deeper than the confirmations; a later re-inclusion reinstates the same lot).

Deposit addresses created while a poll runs: the poll reads the node's head first and the watched addresses after
it. A customer only learns an address once it is committed, so a transfer to an address this poll does not watch
lands in a block after that head, which the next poll scans.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from chain.addresses import normalize_address
from chain.reorg import ReorgCheck, detect_reorg, forget_from, non_canonical_blocks
from chain.rpc import ChainReader
from chain.scanner import DEFAULT_INITIAL_RANGE_BLOCKS, ScannerConfig, ScanResult, ScanState, TransferScanner
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import ChainSettings
from services.ledger.repository import lock_accounts
from services.usdc import repository as repo
from services.usdc.crediting import credit_locked_deposit, funding_account, undo_credited_deposit
from services.usdc.models import DepositStatus

log = logging.getLogger("creditrail.usdc")

MAX_ERROR_LENGTH = 1000
DEFAULT_KEEP_BLOCKS = 256
# eth_getLogs calls of one poll at most (each over at most the chain's max_range_blocks).
MAX_CALLS_PER_POLL = 100
# Deposits credited per unit of work in the confirmation pass: the customers' locks are held that long at most.
CREDIT_CHUNK = 25
_SETTLED = (DepositStatus.CREDITED, DepositStatus.CARRIED)


class CursorMoved(RuntimeError):
    """Another poller of the same chain stored its scan first (only possible without the job's lock)."""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    chain_id: int
    from_block: int
    to_block: int
    target_block: int
    new_deposits: int
    revived_deposits: int
    rewound_to: int | None
    caught_up: bool

    @property
    def stored_logs(self) -> int:
        """Deposits written by this poll (new ones, and ones back in the canonical chain)."""
        return self.new_deposits + self.revived_deposits


def hash_window_blocks(chain: ChainSettings) -> int:
    """How many blocks below the head the scanner reads hashes of: more than the confirmations, so a reorg of a
    deposit not yet credited is always noticed."""
    return max(64, chain.confirmations + 16)


def scanner_for(
    rpc: ChainReader, chain: ChainSettings, *, max_calls_per_scan: int = MAX_CALLS_PER_POLL
) -> TransferScanner:
    config = ScannerConfig(
        tokens=(chain.usdc_address,),
        confirmations=0,
        head_tag="latest",
        max_range_blocks=chain.max_range_blocks,
        hash_window_blocks=hash_window_blocks(chain),
        max_calls_per_scan=max_calls_per_scan,
    )
    return TransferScanner(rpc, config, chain_id=chain.chain_id)


def _cursor(engine: Engine, chain: ChainSettings, now: datetime) -> tuple[Any, dict[int, str]]:
    """The chain's cursor (created at the configured start block on first use) and its recent block hashes."""
    with unit_of_work(engine) as session:
        cursor = repo.get_cursor(session, chain.chain_id)
        if cursor is None:
            initial_range = min(DEFAULT_INITIAL_RANGE_BLOCKS, chain.max_range_blocks)
            repo.insert_cursor(session, chain.chain_id, chain.start_block, initial_range, now)
            cursor = repo.get_cursor(session, chain.chain_id)
        return cursor, repo.recent_blocks(session, chain.chain_id)


def _watched(engine: Engine, chain: ChainSettings) -> tuple[Any, dict[str, int]]:
    with unit_of_work(engine) as session:
        return repo.get_cursor(session, chain.chain_id), repo.addresses_on_chain(session, chain.chain_id)


def record_error(engine: Engine, chain_id: int, error: BaseException, now: datetime | None = None) -> None:
    """Remember the last node error on the chain's cursor (the cursor itself does not move)."""
    with unit_of_work(engine) as session:
        if repo.get_cursor(session, chain_id) is not None:
            repo.update_cursor(
                session,
                chain_id,
                last_error=f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH],
                last_error_at=now or utcnow(),
            )


@dataclass(frozen=True, slots=True)
class _Scanned:
    """One scan, not yet stored: where it started, what it watched and found, and the hashes it built on."""

    start: ScanState
    watched: dict[str, int]
    result: ScanResult
    # The stored hashes this scan continues (checked canonical after it), and what a reorg check then found.
    known_hashes: dict[int, str]
    reorg_after: ReorgCheck


def poll_chain(
    engine: Engine,
    chain: ChainSettings,
    rpc: ChainReader,
    *,
    now: datetime | None = None,
    keep_blocks: int = DEFAULT_KEEP_BLOCKS,
    max_calls: int = MAX_CALLS_PER_POLL,
) -> PollOutcome:
    """Detect a reorg, scan the next bounded range (at most ``max_calls`` ``eth_getLogs`` calls), store what it
    found and move the cursor."""
    now = now or utcnow()
    keep_blocks = max(keep_blocks, hash_window_blocks(chain))
    known_hashes, rewound_to = _check_before(engine, chain, rpc, now)
    scanned = _scan(engine, chain, rpc, scanner_for(rpc, chain, max_calls_per_scan=max_calls), known_hashes)
    return _store_or_rewind(engine, chain, rpc, scanned, now, keep_blocks, rewound_to)


def _check_before(
    engine: Engine, chain: ChainSettings, rpc: ChainReader, now: datetime
) -> tuple[dict[int, str], int | None]:
    """The stored block hashes, after rewinding if they are no longer canonical; and where it rewound to."""
    _cursor_row, known_hashes = _cursor(engine, chain, now)
    check = detect_reorg(rpc, known_hashes)
    if not check.reorged or check.rewind_to_block is None:
        return known_hashes, None
    _rewind(engine, chain, rpc, check.rewind_to_block, now, deeper_than_memory=check.deeper_than_memory)
    return forget_from(known_hashes, check.rewind_to_block), check.rewind_to_block


def _scan(
    engine: Engine, chain: ChainSettings, rpc: ChainReader, scanner: TransferScanner, known_hashes: dict[int, str]
) -> _Scanned:
    """Scan from the stored cursor towards the head; no transaction is open while the node is asked."""
    target = scanner.target_block()  # before reading the addresses: see the module's docstring
    cursor, watched = _watched(engine, chain)
    start = ScanState(int(cursor.next_block), int(cursor.range_blocks))
    result = scanner.scan(start, watched.keys(), to_block=target)
    # The blocks this scan builds on must still be canonical now that it is done (a reorg during the scan would
    # otherwise leave stored hashes of two different chains, and the next check would miss it).
    return _Scanned(start, watched, result, known_hashes, detect_reorg(rpc, known_hashes))


def _store_or_rewind(
    engine: Engine,
    chain: ChainSettings,
    rpc: ChainReader,
    scanned: _Scanned,
    now: datetime,
    keep_blocks: int,
    rewound_to: int | None,
) -> PollOutcome:
    start, result, after = scanned.start, scanned.result, scanned.reorg_after
    if after.reorged and after.rewind_to_block is not None:
        _rewind(engine, chain, rpc, after.rewind_to_block, now, deeper_than_memory=after.deeper_than_memory)
        return PollOutcome(
            chain.chain_id,
            start.next_block,
            start.next_block - 1,
            result.target_block,
            0,
            0,
            after.rewind_to_block,
            False,
        )

    watched = scanned.watched
    token = normalize_address(chain.usdc_address)
    transfers = [t for t in result.transfers if t.value_units and t.token == token and t.to_address in watched]
    with unit_of_work(engine) as session:
        current = repo.get_cursor(session, chain.chain_id, for_update=True)
        if int(current.next_block) != start.next_block:
            raise CursorMoved(f"chain {chain.chain_id}: the cursor moved during the poll; not storing this scan")
        existing = repo.find_deposits_of_txs(session, chain.chain_id, {t.tx_hash for t in transfers})
        fresh = transfers
        back: list[tuple[Any, Any]] = []  # (stored deposit, transfer now seen in another block or again)
        if existing:
            fresh = []
            for transfer in transfers:
                found = existing.get((transfer.tx_hash, transfer.log_index))
                if found is None:
                    fresh.append(transfer)
                elif found.status == DepositStatus.ORPHANED or found.block_hash != transfer.block_hash:
                    back.append((found, transfer))
        new = repo.insert_observed(session, chain.chain_id, fresh, watched, now)
        revived = _revive(session, back, now)
        repo.store_blocks(session, chain.chain_id, result.block_hashes, keep_blocks=keep_blocks)
        repo.update_cursor(
            session,
            chain.chain_id,
            next_block=result.state.next_block,
            range_blocks=result.state.range_blocks,
            head_block=result.target_block,
            updated_at=now,
            **({"last_error": None, "last_error_at": None} if result.interrupted_by is None else {}),
        )
    if result.interrupted_by is not None:
        record_error(engine, chain.chain_id, result.interrupted_by, now)
    return PollOutcome(
        chain.chain_id,
        result.from_block,
        result.to_block,
        result.target_block,
        new,
        revived,
        rewound_to,
        result.caught_up,
    )


def _revive(session: Any, back: list[tuple[Any, Any]], now: datetime) -> int:
    """Deposits seen again in the canonical chain: orphaned ones, or ones now in another block. Observed afresh at
    the block they are in now, to be confirmed again. One already settled in its old block (a reorg this listener
    did not see, deeper than its memory) is undone first, then re-included when it is confirmed again."""
    if not back:
        return 0
    lock_accounts(session, (found.account_id for found, _ in back))
    for found, transfer in back:
        current = repo.get_deposit(session, found.id)
        if current.status in _SETTLED:
            undo_credited_deposit(
                session,
                current,
                now=now,
                reason=f"the transfer moved from block {current.block_number} to block {transfer.block_number}",
            )
        repo.update_deposit(
            session,
            found.id,
            status=DepositStatus.OBSERVED,
            block_number=transfer.block_number,
            block_hash=transfer.block_hash,
            orphaned_at=None,
        )
    return len(back)


def _rewind(
    engine: Engine,
    chain: ChainSettings,
    rpc: ChainReader,
    first_block: int,
    now: datetime,
    *,
    deeper_than_memory: bool = False,
) -> None:
    """Undo what the reorg took away from ``first_block`` on, and move the cursor back there."""
    with unit_of_work(engine) as session:
        affected = repo.deposits_from_block(session, chain.chain_id, first_block)
    # Checked for every affected deposit, not only settled ones: one observed when read may be credited by the
    # confirmation pass before the write below.
    gone = non_canonical_blocks(rpc, {(d.block_number, d.block_hash) for d in affected})
    with unit_of_work(engine) as session:
        cursor = repo.get_cursor(session, chain.chain_id, for_update=True)
        lock_accounts(session, (d.account_id for d in affected if (d.block_number, d.block_hash) in gone))
        for deposit in affected:
            if (deposit.block_number, deposit.block_hash) not in gone:
                continue
            current = repo.get_deposit(session, deposit.id)
            if current.block_hash != deposit.block_hash:
                continue  # moved since it was read: it is about its new block now
            if current.status == DepositStatus.OBSERVED:
                repo.update_deposit(session, current.id, status=DepositStatus.ORPHANED, orphaned_at=now)
            elif current.status in _SETTLED:
                undo_credited_deposit(
                    session,
                    current,
                    now=now,
                    reason=f"block {current.block_number} left the canonical chain after the deposit was credited",
                )
        if int(cursor.next_block) > first_block:
            repo.update_cursor(session, chain.chain_id, next_block=first_block, updated_at=now)
        repo.forget_blocks_from(session, chain.chain_id, first_block)
    if deeper_than_memory:
        log.error(
            "chain %s: reorg deeper than the %s remembered blocks; rescanning from block %s, older deposits unchecked",
            chain.chain_id,
            DEFAULT_KEEP_BLOCKS,
            first_block,
        )
    else:
        log.warning("chain %s: reorg, rescanning from block %s", chain.chain_id, first_block)


def confirmation_target(rpc: ChainReader, chain: ChainSettings) -> int:
    """The newest block deep enough for crediting: ``finalized``, or the head minus the confirmations."""
    if chain.use_finalized:
        return rpc.block_number("finalized")
    return rpc.block_number("latest") - chain.confirmations


def confirm_deposits(
    engine: Engine, chain: ChainSettings, rpc: ChainReader, *, now: datetime | None = None, limit: int = 200
) -> int:
    """Credit observed deposits that are deep enough, after checking again that their block is still canonical;
    orphan those whose block is not (the poller's reorg check rescans their range). Returns how many deposits it
    looked at (at most ``limit``). Each chunk of :data:`CREDIT_CHUNK` deposits is its own unit of work, so a
    customer's lock is never held for a whole batch."""
    now = now or utcnow()
    target = confirmation_target(rpc, chain)
    with unit_of_work(engine) as session:
        pending = repo.pending_deposits(session, chain.chain_id, target, limit)
    if not pending:
        return 0
    gone = non_canonical_blocks(rpc, {(d.block_number, d.block_hash) for d in pending})
    funding_account_id: int | None = None
    for offset in range(0, len(pending), CREDIT_CHUNK):
        chunk = pending[offset : offset + CREDIT_CHUNK]
        with unit_of_work(engine) as session:
            lock_accounts(session, (d.account_id for d in chunk))
            now_rows = repo.deposits_by_id(session, [d.id for d in chunk])
            if funding_account_id is None:
                funding_account_id = funding_account(session, chain.chain_id)
            for deposit in chunk:
                current = now_rows[deposit.id]
                if current.status != DepositStatus.OBSERVED or current.block_hash != deposit.block_hash:
                    continue  # changed since it was read: the next pass looks again
                if (deposit.block_number, deposit.block_hash) in gone:
                    repo.update_deposit(session, current.id, status=DepositStatus.ORPHANED, orphaned_at=now)
                    continue
                credit_locked_deposit(
                    session,
                    current,
                    now=now,
                    min_deposit_usdc_units=chain.min_deposit_usdc_units,
                    funding_account_id=funding_account_id,
                )
    return len(pending)
