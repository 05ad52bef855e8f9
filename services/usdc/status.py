"""Where each chain's listener stands, for operators: the admin API, ``creditrail usdc status``, the metrics and
readiness. Read from the chain's cursor (the next block to scan, the head it last saw, its last node error) and
the deposits still waiting for their confirmations, in one query for every chain."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from services.core.logs import redact
from services.core.settings import ChainSettings
from services.usdc import repository as repo
from services.usdc.models import DepositStatus
from services.usdc.rows import AddressRow, DepositRow

# Deposits seen on the chain and not yet settled: waiting for their confirmations (or for the crediting pass).
PENDING_STATUSES = (DepositStatus.OBSERVED, DepositStatus.CONFIRMED)


@dataclass(frozen=True, slots=True)
class CursorState:
    """A chain's cursor as stored, with its pending deposits."""

    chain_id: int
    next_block: int
    range_blocks: int
    head_block: int | None
    updated_at: datetime
    last_error: str | None
    last_error_at: datetime | None
    deposits_pending: int

    @property
    def scanned_block(self) -> int:
        """The last block scanned (one below the next)."""
        return self.next_block - 1

    @property
    def lag_blocks(self) -> int | None:
        """Blocks between the head last seen and the last block scanned (None before the first poll)."""
        return None if self.head_block is None else max(0, self.head_block - self.scanned_block)


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """A chain as configured (or only known from its cursor), and where its listener stands: also the admin API's
    answer (FastAPI serves the dataclass as it is)."""

    chain_id: int
    name: str
    # False for a chain known only from its stored cursor (no longer configured).
    configured: bool
    confirmations: int | None
    use_finalized: bool | None
    # The next block the listener scans, the last it scanned, the head it saw last, and the difference (None until
    # its first poll of the chain).
    next_block: int | None
    scanned_block: int | None
    head_block: int | None
    lag_blocks: int | None
    range_blocks: int | None
    updated_at: datetime | None
    # The last node error and when (cleared by the next clean poll).
    last_error: str | None
    last_error_at: datetime | None
    # Deposits seen and waiting for their confirmations.
    deposits_pending: int


def read_cursors(connection: Connection | Session) -> dict[int, CursorState]:
    """Every chain's cursor with its count of pending deposits, in one query."""
    c, d = repo.cursors.c, repo.deposits.c
    pending = (
        select(func.count())
        .select_from(repo.deposits)
        .where(d.chain_id == c.chain_id, d.status.in_([str(s) for s in PENDING_STATUSES]))
        .scalar_subquery()
    )
    stmt = select(
        c.chain_id,
        c.next_block,
        c.range_blocks,
        c.head_block,
        c.updated_at,
        c.last_error,
        c.last_error_at,
        pending.label("deposits_pending"),
    ).order_by(c.chain_id)
    return {int(row.chain_id): CursorState(**row._asdict()) for row in connection.execute(stmt)}


def chain_statuses(
    cursors: dict[int, CursorState], chains: Iterable[ChainSettings], secrets: Iterable[str] = ()
) -> list[ChainStatus]:
    """The configured chains in their order, then any chain only known from its cursor. A stored error is shown
    redacted (it could name a node's URL, which may carry a key)."""
    configured = list(chains)
    known = {chain.chain_id for chain in configured}
    out = [_status(chain.chain_id, chain, cursors.get(chain.chain_id), secrets) for chain in configured]
    out += [_status(chain_id, None, cursor, secrets) for chain_id, cursor in cursors.items() if chain_id not in known]
    return out


def _status(
    chain_id: int, chain: ChainSettings | None, cursor: CursorState | None, secrets: Iterable[str]
) -> ChainStatus:
    return ChainStatus(
        chain_id=chain_id,
        name=(chain.name if chain and chain.name else f"chain {chain_id}"),
        configured=chain is not None,
        confirmations=chain.confirmations if chain else None,
        use_finalized=chain.use_finalized if chain else None,
        next_block=cursor.next_block if cursor else None,
        scanned_block=cursor.scanned_block if cursor else None,
        head_block=cursor.head_block if cursor else None,
        lag_blocks=cursor.lag_blocks if cursor else None,
        range_blocks=cursor.range_blocks if cursor else None,
        updated_at=cursor.updated_at if cursor else None,
        last_error=redact(cursor.last_error, secrets) if cursor and cursor.last_error else None,
        last_error_at=cursor.last_error_at if cursor else None,
        deposits_pending=cursor.deposits_pending if cursor else 0,
    )


def account_addresses(session: Session, account_id: int) -> list[AddressRow]:
    """An account's deposit addresses, one per chain, by chain id."""
    a = repo.addresses.c
    return list(session.execute(select(repo.addresses).where(a.account_id == account_id).order_by(a.chain_id)).all())


def account_deposits_page(
    session: Session, account_id: int, limit: int, before_id: int | None = None
) -> list[DepositRow]:
    """Up to ``limit`` of an account's deposits, newest first (by id), below ``before_id`` when given."""
    d = repo.deposits.c
    stmt = select(repo.deposits).where(d.account_id == account_id)
    if before_id is not None:
        stmt = stmt.where(d.id < before_id)
    return list(session.execute(stmt.order_by(d.id.desc()).limit(limit)).all())
