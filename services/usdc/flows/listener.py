"""The USDC listener: one poll of one chain, and the confirmation pass that credits deposits.

Each step reads what it needs in a short unit of work, talks to the node with no transaction open, then writes its
results in another unit of work. The stored cursor and recent block hashes are the only state, so a poll killed
anywhere resumes from the last committed cursor, and storing a log twice is impossible (unique chain id, tx hash and
log index). Node-side filters and subscriptions are never used: ``eth_getLogs`` over bounded ranges is the truth.

Reorgs: each scan builds on the newest block hash stored (or, while catching up, the newest of the ranges scanned
before it) and reads that block's hash again once its logs are in, in the same request as its own block hashes,
before anything is stored: a reorg before or during the scan would otherwise leave the hashes of two chains stored
and go unnoticed. When it changed (chain.reorg.detect_reorg then walks back to the common ancestor), nothing of the
scan is stored and the cursor rewinds to the fork point: deposits at or above it whose block is no longer canonical
are orphaned if they were only observed (a rescan revives them if they are still in the chain, in whatever block
they landed), and undone if they were credited (clawback and a finance exception: the reorg was deeper than the
confirmations; a later re-inclusion reinstates the same lot).

Deposits recorded by an observer of one transaction (flows/observe.py: a claim, an x402 settlement) may lie ahead
of the cursor, credited before their confirmations. Storing a scan locks the cursor, which observers hold shared
while they write, so a log is stored once between them; and a scan that covers such a deposit's block without
finding it there (a reorg before the listener reached it) orphans it, or undoes it if it was credited.

Deposit addresses created while a poll runs: the poll reads the node's head first and the watched addresses after
it. A customer only learns an address once it is committed, so a transfer to an address this poll does not watch
lands in a block after that head, which the next poll scans.

Catching up (:func:`catch_up`, the poll job): polls follow one another with the next range's scan overlapping the
current range's store. The scan runs in the calling thread while a helper thread stores the range before it; the
stores run one at a time, in order, each a unit of work that moves the cursor only when it commits (and refuses to
store a range that does not start at the cursor). A range scanned ahead lives only in memory until its turn: a
crash at any instant leaves the last committed cursor, and the next run scans again from there. Each scan is
checked against the hashes of the ranges before it, stored or still in memory, so a reorg under a range not yet
stored is noticed too: the ranges before it are stored first, then the rewind undoes what the reorg took away.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlmodel import Session

from chain.logs import TransferLog
from chain.reorg import NO_REORG, ReorgCheck, detect_reorg, non_canonical_blocks, remember_block_hashes
from chain.rpc import ChainReader
from chain.scanner import ScannerConfig, ScanResult, ScanState, TransferScanner
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.errors import CreditrailError
from services.core.settings import ChainSettings
from services.ledger.repository import lock_accounts
from services.usdc import repository as repo
from services.usdc.crediting import (
    credit_locked_deposit,
    funding_account,
    set_aside_deposit,
    set_aside_reason,
    undo_credited_deposit,
)
from services.usdc.models import DepositStatus, SetAsideReason
from services.usdc.rows import CursorRow, DepositRow, StoredDeposit

log = logging.getLogger("creditrail.usdc")

MAX_ERROR_LENGTH = 1000
DEFAULT_KEEP_BLOCKS = 256
# eth_getLogs calls of one poll at most (each over at most the chain's max_range_blocks).
MAX_CALLS_PER_POLL = 100
# Logs one poll's scan gathers at most (it ends with the eth_getLogs call that reaches this many): each unit of work
# stays short, and while one range is stored the next one is fetched. A call that brought more narrows the range.
SCAN_TARGET_LOGS = 2_000
# The range a new cursor starts with: narrow, so that a dense chain is not asked for an oversized first answer; it
# doubles with each call that brings fewer than half the target, up to the chain's max_range_blocks.
INITIAL_RANGE_BLOCKS = 10
# Polls of one catch_up call at most (the poll job's run).
MAX_POLLS_PER_CATCH_UP = 100
# Deposits credited per unit of work in the confirmation pass: the customers' locks are held that long at most.
CREDIT_CHUNK = 25
_SETTLED = (DepositStatus.CREDITED, DepositStatus.CARRIED)


class CursorMoved(RuntimeError):
    """Another poller of the same chain stored its scan first (only possible without the job's lock)."""


@dataclass(frozen=True, slots=True, kw_only=True)
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
        grow_below_logs=SCAN_TARGET_LOGS // 2,
        target_logs_per_scan=SCAN_TARGET_LOGS,
    )
    return TransferScanner(rpc, config, chain_id=chain.chain_id)


def _start(engine: Engine, chain: ChainSettings, now: datetime) -> tuple[ScanState, dict[str, int], dict[int, str]]:
    """Where the chain's cursor stands (created at the configured start block on first use), the watched addresses
    (address -> account id) and the stored block hashes, in one short unit of work."""
    with unit_of_work(engine) as session:
        cursor = ensure_cursor(session, chain, now)
        watched = repo.addresses_on_chain(session, chain.chain_id)
        known_hashes = repo.recent_blocks(session, chain.chain_id)
    return ScanState(int(cursor.next_block), int(cursor.range_blocks)), watched, known_hashes


def ensure_cursor(session: Session, chain: ChainSettings, now: datetime) -> CursorRow:
    """The chain's cursor, created at the configured start block on first use (by the listener, or by an observer
    of a transaction that comes first: either may, once)."""
    cursor = repo.get_cursor(session, chain.chain_id)
    if cursor is None:
        initial_range = min(INITIAL_RANGE_BLOCKS, chain.max_range_blocks)
        if repo.insert_cursor_if_absent(session, chain.chain_id, chain.start_block, initial_range, now):
            # A chain new to the listener (added to the configuration later) watches every address there is, from
            # its start block.
            repo.insert_missing_addresses(
                session, chain.chain_id, repo.addresses_missing_on_chain(session, chain.chain_id), now
            )
        cursor = repo.get_cursor(session, chain.chain_id)
        assert cursor is not None  # inserted above, by this call or another
    return cursor


def watch_every_address(engine: Engine, chain: ChainSettings, rpc: ChainReader, *, now: datetime | None = None) -> int:
    """Register on ``chain`` every deposit address some other chain has and it has not (an account's address is the
    same on every chain), and store the transfers to them in the blocks the chain's cursor has already passed:
    returns how many addresses it added.

    New addresses are registered on every configured chain when they are made, so this finds addresses only when
    the configuration gained a chain (its cursor is new: nothing to scan again) or in rows made before that rule.
    The past blocks are scanned for those addresses alone, with no transaction open; then one unit of work adds
    the addresses and the deposits found, provided the cursor has not moved meanwhile (else it changes nothing:
    :class:`CursorMoved`)."""
    now = now or utcnow()
    with unit_of_work(engine) as session:
        missing = repo.addresses_missing_on_chain(session, chain.chain_id)
        cursor = repo.get_cursor(session, chain.chain_id)
    if not missing:
        return 0
    found: list[TransferLog] = []
    scanned_to = None if cursor is None else int(cursor.next_block) - 1
    if scanned_to is not None and scanned_to >= chain.start_block:
        config = ScannerConfig(
            tokens=(chain.usdc_address,),
            max_range_blocks=chain.max_range_blocks,
            hash_window_blocks=0,
            max_calls_per_scan=MAX_CALLS_PER_POLL,
        )
        scanner = TransferScanner(rpc, config, chain_id=chain.chain_id)
        state = ScanState(chain.start_block, min(INITIAL_RANGE_BLOCKS, chain.max_range_blocks))
        recipients = [row.address for row in missing]
        while state.next_block <= scanned_to:
            result = scanner.scan(state, recipients, to_block=scanned_to)
            found.extend(t for t in result.transfers if t.value_units)
            if result.interrupted_by is not None:
                raise result.interrupted_by
            state = result.state
    with unit_of_work(engine) as session:
        if cursor is not None:
            current = repo.get_cursor(session, chain.chain_id, for_update=True)
            assert current is not None  # a chain's cursor, once made, stays
            if int(current.next_block) != int(cursor.next_block):
                raise CursorMoved(f"chain {chain.chain_id}: the cursor moved while past blocks were scanned")
        added = repo.insert_missing_addresses(session, chain.chain_id, missing, now)
        stored = repo.find_deposits(session, chain.chain_id, {(t.tx_hash, t.log_index) for t in found})
        fresh = [t for t in found if (t.tx_hash, t.log_index) not in stored]
        account_of = {row.address: row.account_id for row in missing}
        repo.insert_observed(session, chain.chain_id, fresh, account_of, now)
    if added:
        log.info(
            "chain %s: %s deposit addresses of other chains now watched here, %s past transfers to them stored",
            chain.chain_id,
            added,
            len(fresh),
        )
    return added


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
    """One scan, not yet stored: where it started, what it watched and found, and whether the blocks it builds on
    (stored, or of the scans before it) were still canonical once its logs were in."""

    start: ScanState
    watched: dict[str, int]
    result: ScanResult
    # The transfers to store: of the chain's USDC, of some value, to a watched address.
    transfers: list[TransferLog]
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
    """Scan the next bounded range (at most ``max_calls`` ``eth_getLogs`` calls and about :data:`SCAN_TARGET_LOGS`
    logs), then store what it found and move the cursor; or rewind, if the blocks it builds on changed."""
    now = now or utcnow()
    keep_blocks = max(keep_blocks, hash_window_blocks(chain))
    scanner = scanner_for(rpc, chain, max_calls_per_scan=max_calls)
    target = scanner.target_block()  # before reading the addresses: see the module's docstring
    start, watched, known_hashes = _start(engine, chain, now)
    scanned = _scan(chain, rpc, scanner, start, watched, target, known_hashes)
    if scanned.reorg_after.reorged:
        return _rewind_after(engine, chain, rpc, scanned, now)
    return _store(engine, chain, scanned, now, keep_blocks)


def catch_up(
    engine: Engine,
    chain: ChainSettings,
    rpc: ChainReader,
    *,
    now: datetime | None = None,
    keep_blocks: int = DEFAULT_KEEP_BLOCKS,
    max_polls: int = MAX_POLLS_PER_CATCH_UP,
    max_calls: int = MAX_CALLS_PER_POLL,
    max_stored: int | None = None,
) -> list[PollOutcome]:
    """Polls (each what :func:`poll_chain` does) until caught up with the head, with each range's scan overlapping
    the store of the range before it (see the module's docstring); returns their outcomes, in order.

    Ends when caught up, after ``max_polls`` polls, or once ``max_stored`` deposits were stored. A node error that
    cuts a scan short after some progress is recorded on the cursor and that progress stored, and the catch-up goes
    on; a node error with no progress is raised once the store before it has finished (committed or not).
    """
    now = now or utcnow()
    keep_blocks = max(keep_blocks, hash_window_blocks(chain))
    scanner = scanner_for(rpc, chain, max_calls_per_scan=max_calls)
    run = _CatchUp(engine, chain, rpc, scanner, now, keep_blocks, max_polls, max_stored)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"usdc-store-{chain.chain_id}") as storer:
        while not run.over() and not run.pass_to_head(storer):
            pass
    return run.outcomes


class _CatchUp:
    """The state of one :func:`catch_up` call: its settings, and the outcomes of the polls stored so far."""

    def __init__(
        self,
        engine: Engine,
        chain: ChainSettings,
        rpc: ChainReader,
        scanner: TransferScanner,
        now: datetime,
        keep_blocks: int,
        max_polls: int,
        max_stored: int | None,
    ) -> None:
        self.engine, self.chain, self.rpc, self.scanner = engine, chain, rpc, scanner
        self.now, self.keep_blocks, self.max_polls, self.max_stored = now, keep_blocks, max_polls, max_stored
        self.outcomes: list[PollOutcome] = []
        self.stored = 0

    def over(self) -> bool:
        """Whether the polls or the deposits of this call are used up."""
        return len(self.outcomes) >= self.max_polls or (self.max_stored is not None and self.stored >= self.max_stored)

    def _done(self, outcome: PollOutcome) -> None:
        self.outcomes.append(outcome)
        self.stored += outcome.stored_logs

    def pass_to_head(self, storer: ThreadPoolExecutor) -> bool:
        """Scan and store from the cursor to the head as read now, one range ahead of the stores. Returns whether
        the catch-up is finished (caught up, or its budget used); False to start another pass (after a rewind, or a
        scan a node error cut short)."""
        engine, chain, rpc, now = self.engine, self.chain, self.rpc, self.now
        target = self.scanner.target_block()  # before reading the addresses: see the module's docstring
        start, watched, known_hashes = _start(engine, chain, now)
        pending: Future[PollOutcome] | None = None
        try:
            while True:
                scanned = _scan(chain, rpc, self.scanner, start, watched, target, known_hashes)
                if pending is not None:
                    previous, pending = pending, None
                    self._done(previous.result())
                    if self.over():
                        return True  # the range just scanned is dropped: the next call scans it again
                if scanned.reorg_after.reorged:
                    self._done(_rewind_after(engine, chain, rpc, scanned, now))
                    return False
                result = scanned.result
                polls_left = self.max_polls - len(self.outcomes) - 1
                may_fill = self.max_stored is not None and self.stored + len(scanned.transfers) >= self.max_stored
                if result.caught_up or result.interrupted_by is not None or polls_left <= 0 or may_fill:
                    # Nothing to scan ahead, or perhaps nothing more wanted: stored here and now, as its outcome
                    # decides what comes next.
                    self._done(_store(engine, chain, scanned, now, self.keep_blocks))
                    if result.caught_up or self.over():
                        return True
                    if result.interrupted_by is not None:
                        return False
                else:
                    pending = storer.submit(_store, engine, chain, scanned, now, self.keep_blocks)
                known_hashes = remember_block_hashes(known_hashes, result.block_hashes, keep_blocks=self.keep_blocks)
                start = result.state
        except BaseException as exc:
            # The store in flight finishes (commits or rolls back) before anything is raised; its own failure wins.
            if pending is not None and (store_error := pending.exception()) is not None:
                raise store_error from exc
            raise


def _scan(
    chain: ChainSettings,
    rpc: ChainReader,
    scanner: TransferScanner,
    start: ScanState,
    watched: dict[str, int],
    target: int,
    known_hashes: dict[int, str],
) -> _Scanned:
    """Scan from ``start`` towards ``target``; only the node is asked (no transaction is open)."""
    newest = max(known_hashes, default=None)
    result = scanner.scan(start, watched.keys(), to_block=target, recheck=() if newest is None else (newest,))
    # The scanner keeps only the configured token's transfers to watched addresses; transfers of nothing are no
    # deposits.
    transfers = [t for t in result.transfers if t.value_units]
    # The blocks this scan builds on must still be canonical now that its logs are in (a reorg before or during the
    # scan would otherwise leave stored hashes of two different chains, and the next check would miss it).
    after = NO_REORG
    if newest is not None and not _same_hash(result.rechecked_hashes.get(newest), known_hashes[newest]):
        after = detect_reorg(rpc, known_hashes)
    return _Scanned(start, watched, result, transfers, after)


def _same_hash(canonical: str | None, known: str) -> bool:
    return canonical is not None and canonical.lower() == known.lower()


def _rewind_after(
    engine: Engine, chain: ChainSettings, rpc: ChainReader, scanned: _Scanned, now: datetime
) -> PollOutcome:
    """The chain changed under a scan: store nothing of it, rewind to the fork point."""
    start, after = scanned.start, scanned.reorg_after
    assert after.rewind_to_block is not None
    _rewind(engine, chain, rpc, after.rewind_to_block, now, deeper_than_memory=after.deeper_than_memory)
    return PollOutcome(
        chain_id=chain.chain_id,
        from_block=start.next_block,
        to_block=start.next_block - 1,
        target_block=scanned.result.target_block,
        new_deposits=0,
        revived_deposits=0,
        rewound_to=after.rewind_to_block,
        caught_up=False,
    )


def _store(engine: Engine, chain: ChainSettings, scanned: _Scanned, now: datetime, keep_blocks: int) -> PollOutcome:
    """Store one scan in one unit of work that moves the cursor past it (the database only: no node call)."""
    start, result, watched, transfers = scanned.start, scanned.result, scanned.watched, scanned.transfers
    cursor_values: dict[str, Any] = {
        "next_block": result.state.next_block,
        "range_blocks": result.state.range_blocks,
        "head_block": result.target_block,
        "updated_at": now,
    }
    if result.interrupted_by is None:
        cursor_values.update(last_error=None, last_error_at=None)
    with unit_of_work(engine) as session:
        # The cursor is locked first; it moves (and the block hashes change) only if this unit of work commits.
        was_at, existing = repo.advance_cursor(
            session,
            chain.chain_id,
            tx_hashes={t.tx_hash for t in transfers},
            new_hashes=result.block_hashes,
            keep_blocks=keep_blocks,
            values=cursor_values,
        )
        if was_at != start.next_block:
            raise CursorMoved(f"chain {chain.chain_id}: the cursor moved during the poll; not storing this scan")
        fresh = transfers
        back: list[tuple[StoredDeposit, TransferLog]] = []  # (stored deposit, transfer seen again)
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
        _drop_unseen(session, chain, scanned, now)
    if result.interrupted_by is not None:
        record_error(engine, chain.chain_id, result.interrupted_by, now)
    return PollOutcome(
        chain_id=chain.chain_id,
        from_block=result.from_block,
        to_block=result.to_block,
        target_block=result.target_block,
        new_deposits=new,
        revived_deposits=revived,
        rewound_to=None,
        caught_up=result.caught_up,
    )


def _revive(session: Session, back: list[tuple[StoredDeposit, TransferLog]], now: datetime) -> int:
    """Deposits seen again in the canonical chain: orphaned ones, or ones now in another block. Observed afresh at
    the block they are in now, to be confirmed again. One already settled in its old block (a reorg this listener
    did not see, deeper than its memory) is undone first, then re-included when it is confirmed again."""
    if not back:
        return 0
    lock_accounts(session, (found.account_id for found, _ in back))
    for found, transfer in back:
        current = repo.get_deposit(session, found.id)
        assert current is not None  # deposits are never deleted
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


def _drop_unseen(session: Session, chain: ChainSettings, scanned: _Scanned, now: datetime) -> None:
    """Deposits an observer recorded (from a transaction's receipt) in the blocks this scan covered, that the scan
    did not find there: their block left the canonical chain before the listener scanned it (a reorg it never saw).
    Orphaned, or undone if they were credited (credit_now), as :func:`_rewind` does; a transfer that is still in
    the chain, in a later block, is revived when a scan finds it there."""
    result = scanned.result
    if result.to_block < result.from_block:
        return
    seen = {(t.tx_hash, t.log_index, t.block_hash) for t in scanned.transfers}
    unseen = [
        d
        for d in repo.recorded_by_observers(session, chain.chain_id, result.from_block, result.to_block)
        if (d.tx_hash, d.log_index, d.block_hash) not in seen and d.to_address in scanned.watched
    ]
    if not unseen:
        return
    lock_accounts(session, (d.account_id for d in unseen))
    for deposit in unseen:
        current = repo.get_deposit(session, deposit.id)
        assert current is not None  # deposits are never deleted
        if current.block_hash != deposit.block_hash or current.status == DepositStatus.ORPHANED:
            continue
        if current.status in _SETTLED:
            undo_credited_deposit(
                session,
                current,
                now=now,
                reason=f"block {current.block_number} left the canonical chain after the deposit was credited",
            )
        else:
            repo.update_deposit(session, current.id, status=DepositStatus.ORPHANED, orphaned_at=now)


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
        assert cursor is not None  # a chain's cursor, once made, stays
        lock_accounts(session, (d.account_id for d in affected if (d.block_number, d.block_hash) in gone))
        for deposit in affected:
            if (deposit.block_number, deposit.block_hash) not in gone:
                continue
            current = repo.get_deposit(session, deposit.id)
            assert current is not None  # deposits are never deleted
            if current.block_hash != deposit.block_hash:
                continue  # moved since it was read: it is about its new block now
            if current.status in (DepositStatus.OBSERVED, DepositStatus.SET_ASIDE):
                # (a deposit set aside was never credited: nothing to undo; its finance exception says it was seen)
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
    funding_account_id = 0
    for offset in range(0, len(pending), CREDIT_CHUNK):
        chunk = pending[offset : offset + CREDIT_CHUNK]
        with unit_of_work(engine) as session:
            lock_accounts(session, (d.account_id for d in chunk))
            now_rows = repo.deposits_by_id(session, [d.id for d in chunk])
            if not funding_account_id:
                funding_account_id = funding_account(session, chain.chain_id)
            for deposit in chunk:
                current = now_rows[deposit.id]
                if current.status != DepositStatus.OBSERVED or current.block_hash != deposit.block_hash:
                    continue  # changed since it was read: the next pass looks again
                if (deposit.block_number, deposit.block_hash) in gone:
                    repo.update_deposit(session, current.id, status=DepositStatus.ORPHANED, orphaned_at=now)
                    continue
                credit_or_set_aside(session, chain, current, funding_account_id, now)
    return len(pending)


# Errors of crediting one deposit that crediting it again would meet again: the deposit is set aside. Anything else
# (the database unreachable, a lock timeout ...) fails the batch, which the next run repeats.
_PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    CreditrailError,
    ValueError,
    ArithmeticError,
    IntegrityError,
    DataError,
    psycopg.IntegrityError,
    psycopg.DataError,
)


def credit_or_set_aside(
    session: Session, chain: ChainSettings, current: DepositRow, funding_account_id: int, now: datetime
) -> None:
    """Credit one deposit in a savepoint; if crediting refuses it for good, roll that back and set it aside (with a
    finance exception), so that it holds back none of the deposits after it."""
    try:
        with session.begin_nested():
            credit_locked_deposit(
                session,
                current,
                now=now,
                min_deposit_usdc_units=chain.min_deposit_usdc_units,
                funding_account_id=funding_account_id,
            )
    except _PERMANENT_ERRORS as exc:
        if isinstance(exc, CreditrailError):
            reason = set_aside_reason(exc)
        elif isinstance(exc, DBAPIError | psycopg.Error):
            reason = f"{SetAsideReason.CREDIT_REFUSED}:database_refused"
        else:
            reason = f"{SetAsideReason.CREDIT_REFUSED}:{type(exc).__name__}"
        message = exc.message if isinstance(exc, CreditrailError) else type(exc).__name__
        log.error("chain %s: deposit %s set aside (%s): %s", chain.chain_id, current.id, reason, message)
        set_aside_deposit(session, current, reason=reason, message=message, now=now)
