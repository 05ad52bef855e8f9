"""Observing one transaction: its receipt's USDC transfers to our deposit addresses, recorded and credited now.

The listener finds deposits by scanning blocks; a payer who sent a transfer (or our own x402 settlement, which
relayed one) knows its transaction and need not wait for the next poll. :func:`observe_transaction` reads the
receipt (no transaction of the database open meanwhile), keeps its ``Transfer`` logs of the chain's USDC contract to
our deposit addresses, and records them exactly as the listener does: the same rows, the same unique (chain id, tx
hash, log index), inserted only if absent, so that the listener and an observer record each transfer once between
them in either order. Crediting is the listener's too (:func:`~services.usdc.flows.listener.credit_or_set_aside`,
under the accounts' locks, idempotent): it happens when the chain's confirmations are reached and the block is
still canonical, or, with ``credit_now``, as soon as the receipt shows success (x402 settlement). A transfer
credited before its confirmations that a reorg then drops is undone by the listener as any credited deposit is:
a clawback and a finance exception.

The chain's cursor is held with a shared lock while the deposits are written: storing a poll locks it for update,
so a poll and an observer never both insert the same log (the poll reads which logs are stored under that lock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from chain.logs import TransferLog, decode_transfer_logs
from chain.reorg import non_canonical_blocks
from chain.rpc import ReceiptReader
from services.core.db import unit_of_work
from services.core.money import usdc_units_to_credits
from services.core.settings import ChainSettings
from services.ledger.repository import lock_accounts
from services.usdc import repository as repo
from services.usdc.crediting import funding_account
from services.usdc.errors import InvalidTransactionHash
from services.usdc.flows.listener import confirmation_target, credit_or_set_aside, ensure_cursor
from services.usdc.models import DepositStatus, DepositVia
from services.usdc.rows import DepositRow

_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
# Receipts read at most when the block of the first one is no longer canonical by the time it is checked.
_RECEIPT_READS = 2


class TransactionStatus(StrEnum):
    NOT_FOUND = "not_found"
    REVERTED = "reverted"
    INCLUDED = "included"


class ObservedStatus(StrEnum):
    """A deposit's state as an observer reports it."""

    PENDING = "pending"  # observed, waiting for its confirmations
    CREDITED = "credited"
    CARRIED = "carried"  # below the chain's minimum (with what was carried): carried to the next deposit
    SET_ASIDE = "set_aside"  # cannot be credited: a finance exception says what to do
    ORPHANED = "orphaned"  # its block left the canonical chain


_REPORTED = {
    DepositStatus.OBSERVED: ObservedStatus.PENDING,
    DepositStatus.CONFIRMED: ObservedStatus.PENDING,
    DepositStatus.CREDITED: ObservedStatus.CREDITED,
    DepositStatus.CARRIED: ObservedStatus.CARRIED,
    DepositStatus.SET_ASIDE: ObservedStatus.SET_ASIDE,
    DepositStatus.ORPHANED: ObservedStatus.ORPHANED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedDeposit:
    deposit_id: int
    account_id: int
    log_index: int
    to_address: str
    amount_usdc_units: int
    # Credits minted when credited; else what the amount alone is worth (the carry may add to it).
    credits: int
    status: ObservedStatus
    # Blocks still to come before the confirmation pass may credit it (0 once deep enough, or settled).
    confirmations_to_come: int
    lot_id: int | None
    via: str | None
    # Whether this call credited it (False: credited before, or not yet).
    credited_now: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedTransaction:
    chain_id: int
    tx_hash: str
    status: TransactionStatus
    block_number: int | None = None
    block_hash: str | None = None
    deposits: tuple[ObservedDeposit, ...] = ()

    @property
    def is_deposit(self) -> bool:
        """Whether the transaction carries a transfer of the chain's USDC to one of our deposit addresses."""
        return bool(self.deposits)


def normalize_tx_hash(text: str) -> str:
    """``text`` as a lowercase transaction hash; :class:`InvalidTransactionHash` (400) if it is not one."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if not _TX_HASH.fullmatch(value):
        raise InvalidTransactionHash("a transaction hash is 0x and 64 hex digits", tx_hash=str(text)[:100])
    return value


def observe_transaction(
    engine: Engine,
    chain: ChainSettings,
    rpc: ReceiptReader,
    tx_hash: str,
    *,
    now: datetime,
    credit_now: bool = False,
    via: DepositVia | None = None,
) -> ObservedTransaction:
    """Record the transaction's USDC transfers to our deposit addresses as deposits (if the listener has not), and
    credit them when the chain's confirmations are reached (the block checked canonical again) or, with
    ``credit_now``, at once. ``via`` says who observes (default: ``x402`` with ``credit_now``, else ``claim``): it is
    stored on deposits this call records, and an x402 settlement marks its transfer as such whoever recorded it.

    Raises :class:`InvalidTransactionHash` for a malformed hash and the node's errors as they come (nothing is
    written then)."""
    tx_hash = normalize_tx_hash(tx_hash)
    via = via or (DepositVia.X402 if credit_now else DepositVia.CLAIM)
    for attempt in range(_RECEIPT_READS):
        receipt = rpc.transaction_receipt(tx_hash)
        if receipt is None:
            return ObservedTransaction(chain_id=chain.chain_id, tx_hash=tx_hash, status=TransactionStatus.NOT_FOUND)
        block_number, block_hash = int(receipt["blockNumber"], 16), str(receipt["blockHash"]).lower()
        if int(receipt.get("status") or "0x0", 16) != 1:
            return ObservedTransaction(
                chain_id=chain.chain_id,
                tx_hash=tx_hash,
                status=TransactionStatus.REVERTED,
                block_number=block_number,
                block_hash=block_hash,
            )
        transfers = _usdc_transfers(receipt, chain)
        head = rpc.block_number("latest") if transfers else block_number
        deep = False
        if transfers and not credit_now:
            deep = block_number <= confirmation_target(rpc, chain)
            if deep and non_canonical_blocks(rpc, [(block_number, block_hash)]):
                # The receipt came from a block that is no longer canonical: read it again (the transaction may be
                # in another block now); on the last attempt record it, uncredited, for the listener to settle.
                deep = False
                if attempt + 1 < _RECEIPT_READS:
                    continue
        break
    return _record(
        engine,
        chain,
        tx_hash,
        transfers,
        block_number=block_number,
        block_hash=block_hash,
        head=head,
        credit=credit_now or deep,
        via=via,
        now=now,
    )


def _usdc_transfers(receipt: dict[str, Any], chain: ChainSettings) -> list[TransferLog]:
    """The receipt's transfers of the chain's USDC, of some value (recipients not yet checked)."""
    decoded = decode_transfer_logs(receipt.get("logs") or [], chain.chain_id, tokens=(chain.usdc_address.lower(),))
    return [t for t in decoded.transfers if t.value_units]


def _record(
    engine: Engine,
    chain: ChainSettings,
    tx_hash: str,
    transfers: list[TransferLog],
    *,
    block_number: int,
    block_hash: str,
    head: int,
    credit: bool,
    via: DepositVia,
    now: datetime,
) -> ObservedTransaction:
    """Record the transfers to our addresses and credit them if ``credit``, in one unit of work (no node call)."""
    credited_now: set[int] = set()
    with unit_of_work(engine) as session:
        ours = repo.accounts_of_addresses(session, chain.chain_id, (t.to_address for t in transfers))
        mine = [t for t in transfers if t.to_address in ours]
        if not mine:
            return ObservedTransaction(
                chain_id=chain.chain_id,
                tx_hash=tx_hash,
                status=TransactionStatus.INCLUDED,
                block_number=block_number,
                block_hash=block_hash,
            )
        # Shared: polls of the chain wait (they lock it for update to store), other observers do not. Made first if
        # the listener has not yet: without a row to lock, a poll could store the same logs meanwhile.
        ensure_cursor(session, chain, now)
        repo.get_cursor(session, chain.chain_id, for_share=True)
        repo.insert_observed_if_absent(session, chain.chain_id, mine, ours, now, via=via)
        keys = [(t.tx_hash, t.log_index) for t in mine]
        stored = repo.find_deposits(session, chain.chain_id, keys)
        lock_accounts(session, (row.account_id for row in stored.values()))
        rows = repo.deposits_by_id(session, [row.id for row in stored.values()])
        funding_account_id = funding_account(session, chain.chain_id) if credit else 0
        for row in rows.values():
            current = row
            if current.status in (DepositStatus.OBSERVED, DepositStatus.ORPHANED) and current.block_hash != block_hash:
                # Recorded in another block before a reorg: the receipt is the newer view (as a poll's rescan would).
                repo.update_deposit(
                    session,
                    current.id,
                    status=DepositStatus.OBSERVED,
                    block_number=block_number,
                    block_hash=block_hash,
                    orphaned_at=None,
                )
                current = _reread(session, current.id)
            if via == DepositVia.X402 and current.via != DepositVia.X402:
                repo.update_deposit(session, current.id, via=DepositVia.X402.value)
                current = _reread(session, current.id)
            if credit and current.status == DepositStatus.OBSERVED and current.block_hash == block_hash:
                credit_or_set_aside(session, chain, current, funding_account_id, now)
                if _reread(session, current.id).status == DepositStatus.CREDITED:
                    credited_now.add(current.id)
        final = repo.deposits_by_id(session, list(rows))
    deposits = tuple(
        _observed(final[row.id], chain, head, credited_now=row.id in credited_now)
        for row in sorted(final.values(), key=lambda r: int(r.log_index))
    )
    return ObservedTransaction(
        chain_id=chain.chain_id,
        tx_hash=tx_hash,
        status=TransactionStatus.INCLUDED,
        block_number=block_number,
        block_hash=block_hash,
        deposits=deposits,
    )


def _reread(session: Session, deposit_id: int) -> DepositRow:
    current = repo.get_deposit(session, deposit_id)
    assert current is not None  # deposits are never deleted
    return current


def _observed(row: DepositRow, chain: ChainSettings, head: int, *, credited_now: bool) -> ObservedDeposit:
    status = _REPORTED[DepositStatus(row.status)]
    to_come = 0
    if status == ObservedStatus.PENDING:
        # With the finalized tag the count is not known in advance: at least one block more.
        to_come = 1 if chain.use_finalized else max(0, int(row.block_number) + chain.confirmations - head)
    amount = int(row.amount_usdc_units)
    credits = int(row.credits_minted) if row.credits_minted is not None else usdc_units_to_credits(amount)[0]
    return ObservedDeposit(
        deposit_id=int(row.id),
        account_id=int(row.account_id),
        log_index=int(row.log_index),
        to_address=str(row.to_address),
        amount_usdc_units=amount,
        credits=credits,
        status=status,
        confirmations_to_come=to_come,
        lot_id=None if row.lot_id is None else int(row.lot_id),
        via=row.via,
        credited_now=credited_now,
    )
