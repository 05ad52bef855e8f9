"""The USDC rail's queries (SQLAlchemy Core on the caller's session; nothing here commits). Reads return rows typed
by their shapes in ``services.usdc.rows``."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql as pg_sql
from psycopg.rows import namedtuple_row
from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlmodel import Session

from chain.logs import TransferLog
from services.core.db import insert_for, table_of
from services.core.pg import aware, driver_of, raised
from services.usdc.models import ChainBlock, ChainCursor, DepositAddress, DepositStatus, DepositVia, UsdcDeposit
from services.usdc.rows import AddressRow, CursorRow, DepositRow, MissingAddress, StoredDeposit

addresses = table_of(DepositAddress)
cursors = table_of(ChainCursor)
blocks = table_of(ChainBlock)
deposits = table_of(UsdcDeposit)

# The columns a newly observed deposit is stored with, in the order the bulk insert writes them, with their
# PostgreSQL types (the COPY is binary: nothing to escape, and nothing for the server to parse).
DEPOSIT_INSERT_COLUMNS = (
    ("chain_id", "int8"),
    ("tx_hash", "varchar"),
    ("log_index", "int8"),
    ("block_number", "int8"),
    ("block_hash", "varchar"),
    ("from_address", "varchar"),
    ("to_address", "varchar"),
    ("account_id", "int8"),
    ("amount_usdc_units", "numeric"),
    ("status", "varchar"),
    ("observed_at", "timestamptz"),
    ("via", "varchar"),
)
_COPY_DEPOSITS_SQL = (
    f"COPY usdc_deposits ({', '.join(name for name, _ in DEPOSIT_INSERT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)
_COPY_DEPOSIT_TYPES = [pg_type for _, pg_type in DEPOSIT_INSERT_COLUMNS]


# --- deposit addresses -------------------------------------------------------------------------------------


def find_address(session: Session, account_id: int, chain_id: int) -> AddressRow | None:
    return session.execute(
        select(addresses).where(addresses.c.account_id == account_id, addresses.c.chain_id == chain_id)
    ).first()


def insert_address(
    session: Session, *, account_id: int, chain_id: int, derivation_index: int, address: str, now: datetime
) -> None:
    session.execute(
        insert(addresses).values(
            account_id=account_id,
            chain_id=chain_id,
            derivation_index=derivation_index,
            address=address,
            carry_usdc_units=0,
            created_at=now,
        )
    )


def deposit_address_for(session: Session, account_id: int, chain_id: int) -> AddressRow:
    row = find_address(session, account_id, chain_id)
    if row is None:
        raise LookupError(f"account {account_id} has no deposit address on chain {chain_id}")
    return row


def set_carry(session: Session, address_id: int, carry_usdc_units: int) -> None:
    session.execute(update(addresses).where(addresses.c.id == address_id).values(carry_usdc_units=carry_usdc_units))


def addresses_missing_on_chain(session: Session, chain_id: int) -> list[MissingAddress]:
    """The deposit addresses (account id, derivation index, address) that some chain has and ``chain_id`` has not:
    an account's address is the same on every chain, so it is watched on every chain."""
    here = addresses.alias("here")
    stmt = (
        select(
            addresses.c.account_id,
            func.min(addresses.c.derivation_index).label("derivation_index"),
            func.min(addresses.c.address).label("address"),
        )
        .where(
            addresses.c.chain_id != chain_id,
            ~select(here.c.id).where(here.c.chain_id == chain_id, here.c.account_id == addresses.c.account_id).exists(),
        )
        .group_by(addresses.c.account_id)
        .order_by(addresses.c.account_id)
    )
    return list(session.execute(stmt).all())


def insert_missing_addresses(session: Session, chain_id: int, rows: Sequence[MissingAddress], now: datetime) -> int:
    """Give each (account id, derivation index, address) of ``rows`` its row on ``chain_id``, unless it has one
    (one statement per thousand rows); returns how many rows were given."""
    if not rows:
        return 0
    stmt = insert_for(session, addresses).on_conflict_do_nothing()
    values = [
        {
            "account_id": row.account_id,
            "chain_id": chain_id,
            "derivation_index": row.derivation_index,
            "address": row.address,
            "carry_usdc_units": 0,
            "created_at": now,
        }
        for row in rows
    ]
    for start in range(0, len(values), 1_000):
        session.execute(stmt, values[start : start + 1_000])
    return len(values)


def accounts_of_addresses(session: Session, chain_id: int, candidates: Iterable[str]) -> dict[str, int]:
    """Which of ``candidates`` (lowercase hex) are deposit addresses on the chain: address -> account id."""
    wanted = sorted(set(candidates))
    if not wanted:
        return {}
    rows = session.execute(
        select(addresses.c.address, addresses.c.account_id).where(
            addresses.c.chain_id == chain_id, addresses.c.address.in_(wanted)
        )
    )
    return {row.address: row.account_id for row in rows}


def addresses_on_chain(session: Session, chain_id: int) -> dict[str, int]:
    """Every deposit address on the chain, lowercase hex -> account id."""
    rows = session.execute(select(addresses.c.address, addresses.c.account_id).where(addresses.c.chain_id == chain_id))
    return {row.address: row.account_id for row in rows}


# --- cursor and recent blocks ------------------------------------------------------------------------------


# The listener stores each range through advance_cursor and insert_observed: on PostgreSQL straight on the psycopg
# connection (one pipelined round trip, then a COPY); elsewhere through the cursor and block statements below and
# find_deposits_of_txs, which go to the session's connection directly, as the ORM layer of Session.execute costs
# more than such a statement (nothing here writes ORM objects, so there is nothing to flush first).


def get_cursor(
    session: Session, chain_id: int, *, for_update: bool = False, for_share: bool = False
) -> CursorRow | None:
    """The chain's cursor row; ``for_update`` locks it (PostgreSQL) so that two pollers of one chain serialise;
    ``for_share`` takes a shared lock, so that storing a poll (which locks it for update) waits for the writer
    holding it, and such writers do not wait for one another."""
    stmt = select(cursors).where(cursors.c.chain_id == chain_id)
    if for_update:
        stmt = stmt.with_for_update()
    elif for_share:
        stmt = stmt.with_for_update(read=True)
    return session.connection().execute(stmt).first()


def insert_cursor(session: Session, chain_id: int, next_block: int, range_blocks: int, now: datetime) -> None:
    session.execute(
        insert(cursors).values(chain_id=chain_id, next_block=next_block, range_blocks=range_blocks, updated_at=now)
    )


def insert_cursor_if_absent(session: Session, chain_id: int, next_block: int, range_blocks: int, now: datetime) -> bool:
    """:func:`insert_cursor` unless the chain has a cursor (made meanwhile by another); whether this one made it."""
    stmt = insert_for(session, cursors).on_conflict_do_nothing(index_elements=["chain_id"])
    values = {"chain_id": chain_id, "next_block": next_block, "range_blocks": range_blocks, "updated_at": now}
    return bool(session.execute(stmt.values(**values)).rowcount)  # type: ignore[attr-defined]


def update_cursor(session: Session, chain_id: int, **values: Any) -> None:
    session.connection().execute(update(cursors).where(cursors.c.chain_id == chain_id).values(**values))


def recent_blocks(session: Session, chain_id: int) -> dict[int, str]:
    rows = session.execute(select(blocks.c.number, blocks.c.hash).where(blocks.c.chain_id == chain_id))
    return {row.number: row.hash for row in rows}


def store_blocks(session: Session, chain_id: int, new_hashes: Mapping[int, str], *, keep_blocks: int) -> None:
    """Remember ``new_hashes`` (replacing what was stored for those blocks and above) and forget all but the newest
    ``keep_blocks`` block numbers. Two statements, whatever the number of blocks; none without new hashes."""
    if not new_hashes:
        return
    # Everything stored from the first new block on is replaced, so the newest block stored is the newest new one.
    connection = session.connection()
    connection.execute(
        delete(blocks).where(
            blocks.c.chain_id == chain_id,
            or_(blocks.c.number >= min(new_hashes), blocks.c.number <= max(new_hashes) - keep_blocks),
        )
    )
    connection.execute(
        insert(blocks), [{"chain_id": chain_id, "number": n, "hash": h} for n, h in sorted(new_hashes.items())]
    )


def advance_cursor(
    session: Session,
    chain_id: int,
    *,
    tx_hashes: Iterable[str],
    new_hashes: Mapping[int, str],
    keep_blocks: int,
    values: Mapping[str, Any],
) -> tuple[int | None, Mapping[tuple[str, int], StoredDeposit]]:
    """The reads and writes of storing one scanned range, but the deposits: lock the chain's cursor and read where
    it stood, find the stored deposits of ``tx_hashes`` (each with its id, tx hash, log index, status, block hash
    and account id), remember ``new_hashes`` (as :func:`store_blocks`) and set the cursor's ``values``.

    Returns the cursor's ``next_block`` as it was before (None without a cursor) and the deposits found, by (tx hash,
    log index): the caller checks the cursor and raises (rolling the unit of work back) if it is not where the scan
    started. On PostgreSQL, one round trip (a pipeline of the statements, the lock first); elsewhere, one after the
    other.
    """
    hashes = sorted(set(tx_hashes))
    driver = driver_of(session)
    if driver is None:
        current = get_cursor(session, chain_id, for_update=True)
        found = find_deposits_of_txs(session, chain_id, hashes)
        store_blocks(session, chain_id, new_hashes, keep_blocks=keep_blocks)
        update_cursor(session, chain_id, **values)
        return (None if current is None else int(current.next_block)), found
    update_sql = _update_cursor_sql(tuple(values))
    try:
        cursor_read = driver.cursor()
        deposits_read = driver.cursor(row_factory=namedtuple_row)
        with driver.pipeline(), driver.cursor() as writes:
            cursor_read.execute(_LOCK_CURSOR_SQL, (chain_id,))
            if hashes:
                deposits_read.execute(_DEPOSITS_OF_TXS_SQL, (chain_id, hashes))
            if new_hashes:
                numbers = sorted(new_hashes)
                writes.execute(_FORGET_BLOCKS_SQL, (chain_id, numbers[0], numbers[-1] - keep_blocks))
                writes.execute(_REMEMBER_BLOCKS_SQL, (chain_id, numbers, [new_hashes[n] for n in numbers]))
            writes.execute(
                update_sql,
                (*(aware(value) if isinstance(value, datetime) else value for value in values.values()), chain_id),
            )
        locked = cursor_read.fetchone()
        rows: list[Any] = deposits_read.fetchall() if hashes else []
        cursor_read.close()
        deposits_read.close()
    except psycopg.Error as exc:
        raise raised(exc, "advance_cursor") from exc
    return (None if locked is None else int(locked[0])), {(row.tx_hash, row.log_index): row for row in rows}


_LOCK_CURSOR_SQL = "SELECT next_block FROM chain_cursors WHERE chain_id = %s FOR UPDATE"
_DEPOSITS_OF_TXS_SQL = (
    "SELECT id, tx_hash, log_index, status, block_hash, account_id FROM usdc_deposits"
    " WHERE chain_id = %s AND tx_hash = ANY(%s)"
)
_FORGET_BLOCKS_SQL = "DELETE FROM chain_blocks WHERE chain_id = %s AND (number >= %s OR number <= %s)"
_REMEMBER_BLOCKS_SQL = (
    "INSERT INTO chain_blocks (chain_id, number, hash) SELECT %s, number, hash"
    " FROM unnest(%s::int8[], %s::varchar[]) AS new_block (number, hash)"
)


@functools.cache
def _update_cursor_sql(columns: tuple[str, ...]) -> pg_sql.Composed:
    unknown = set(columns) - set(cursors.c.keys())
    if unknown or not columns:
        raise ValueError(f"not columns of chain_cursors: {sorted(unknown)}")
    assignments = pg_sql.SQL(", ").join(pg_sql.SQL("{} = %s").format(pg_sql.Identifier(name)) for name in columns)
    return pg_sql.SQL("UPDATE chain_cursors SET {} WHERE chain_id = %s").format(assignments)


def forget_blocks_from(session: Session, chain_id: int, first_block: int) -> None:
    """Forget the stored hashes of ``first_block`` and above (after a rewind)."""
    session.execute(delete(blocks).where(blocks.c.chain_id == chain_id, blocks.c.number >= first_block))


# --- deposits ----------------------------------------------------------------------------------------------


def get_deposit(session: Session, deposit_id: int) -> DepositRow | None:
    return session.execute(select(deposits).where(deposits.c.id == deposit_id)).first()


def deposits_by_id(session: Session, deposit_ids: Sequence[int]) -> dict[int, DepositRow]:
    if not deposit_ids:
        return {}
    rows = session.execute(select(deposits).where(deposits.c.id.in_(list(deposit_ids)))).all()
    return {row.id: row for row in rows}


def update_deposit(session: Session, deposit_id: int, **values: Any) -> None:
    session.execute(update(deposits).where(deposits.c.id == deposit_id).values(**values))


def find_deposits(
    session: Session, chain_id: int, keys: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], DepositRow]:
    """The stored deposits among ``keys`` ((tx hash, log index) on the chain), by key."""
    wanted = set(keys)
    found = find_deposits_of_txs(session, chain_id, {tx for tx, _ in wanted})
    return {key: row for key, row in found.items() if key in wanted}


def find_deposits_of_txs(
    session: Session, chain_id: int, tx_hashes: Iterable[str]
) -> dict[tuple[str, int], DepositRow]:
    """Every stored deposit of these transactions on the chain, by (tx hash, log index)."""
    hashes = sorted(set(tx_hashes))
    found: dict[tuple[str, int], DepositRow] = {}
    connection = session.connection()
    for start in range(0, len(hashes), 500):
        rows = connection.execute(
            select(deposits).where(deposits.c.chain_id == chain_id, deposits.c.tx_hash.in_(hashes[start : start + 500]))
        ).all()
        found.update({(row.tx_hash, row.log_index): row for row in rows})
    return found


def insert_observed(
    session: Session,
    chain_id: int,
    transfers: Sequence[TransferLog],
    account_of: Mapping[str, int],
    now: datetime,
) -> int:
    """Store ``transfers`` (none of them stored yet) as observed deposits of the accounts ``account_of`` maps their
    recipients to; returns how many.

    On PostgreSQL they go through one binary ``COPY`` (thousands of logs in one round trip); elsewhere as one
    ``executemany``. Either way the unique (chain id, tx hash, log index) refuses a log stored twice.
    """
    if not transfers:
        return 0
    driver = driver_of(session)
    if driver is None:
        session.execute(insert(deposits), [_observed_row(chain_id, t, account_of, now) for t in transfers])
        return len(transfers)
    observed_at = aware(now)
    status = DepositStatus.OBSERVED.value
    via = DepositVia.LISTENER.value
    try:
        with driver.cursor() as cursor, cursor.copy(_COPY_DEPOSITS_SQL) as copy:
            copy.set_types(_COPY_DEPOSIT_TYPES)
            write_row = copy.write_row
            # (TransferLog is a tuple: unpacked, rather than read attribute by attribute)
            for _chain, block_number, block_hash, tx_hash, log_index, _token, sender, to, value_units in transfers:
                write_row(
                    (
                        chain_id,
                        tx_hash,
                        log_index,
                        block_number,
                        block_hash,
                        sender,
                        to,
                        account_of[to],
                        value_units,
                        status,
                        observed_at,
                        via,
                    )
                )
    except (psycopg.Error, OverflowError) as exc:  # raised as SQLAlchemy raises what goes through it
        # (amounts are NUMERIC(78, 0): any uint256 a Transfer carries is stored as it is)
        raise raised(exc, _COPY_DEPOSITS_SQL) from exc
    return len(transfers)


def insert_observed_if_absent(
    session: Session,
    chain_id: int,
    transfers: Sequence[TransferLog],
    account_of: Mapping[str, int],
    now: datetime,
    *,
    via: DepositVia,
) -> int:
    """Store ``transfers`` as observed deposits as :func:`insert_observed` does, but any of them may be stored
    already (by the listener, or a concurrent claim): those are left as they are (``ON CONFLICT DO NOTHING`` on the
    unique chain id, tx hash and log index). Returns how many were new."""
    if not transfers:
        return 0
    stmt = insert_for(session, deposits).on_conflict_do_nothing(index_elements=["chain_id", "tx_hash", "log_index"])
    new = 0
    for transfer in transfers:
        result = session.execute(stmt.values(**_observed_row(chain_id, transfer, account_of, now, via=via)))
        new += int(result.rowcount)  # type: ignore[attr-defined]
    return new


def _observed_row(
    chain_id: int,
    t: TransferLog,
    account_of: Mapping[str, int],
    now: datetime,
    *,
    via: DepositVia = DepositVia.LISTENER,
) -> dict[str, Any]:
    return {
        "chain_id": chain_id,
        "tx_hash": t.tx_hash,
        "log_index": t.log_index,
        "block_number": t.block_number,
        "block_hash": t.block_hash,
        "from_address": t.from_address,
        "to_address": t.to_address,
        "account_id": account_of[t.to_address],
        "amount_usdc_units": t.value_units,
        "status": DepositStatus.OBSERVED.value,
        "observed_at": now,
        "via": via.value,
    }


def pending_deposits(session: Session, chain_id: int, up_to_block: int, limit: int) -> list[DepositRow]:
    """Observed deposits deep enough to confirm, oldest first."""
    stmt = (
        select(deposits)
        .where(
            deposits.c.chain_id == chain_id,
            deposits.c.status == DepositStatus.OBSERVED,
            deposits.c.block_number <= up_to_block,
        )
        .order_by(deposits.c.block_number, deposits.c.log_index)
        .limit(limit)
    )
    return list(session.execute(stmt).all())


def recorded_by_observers(session: Session, chain_id: int, first_block: int, last_block: int) -> list[DepositRow]:
    """The live deposits in blocks ``first_block..last_block`` that an observer (a claim, an x402 settlement)
    recorded rather than the listener: what a poll's scan of those blocks must find again to keep them."""
    live = [status.value for status in DepositStatus if status != DepositStatus.ORPHANED]
    stmt = select(deposits).where(
        deposits.c.chain_id == chain_id,
        deposits.c.status.in_(live),
        deposits.c.block_number >= first_block,
        deposits.c.block_number <= last_block,
        deposits.c.via.in_([DepositVia.CLAIM.value, DepositVia.X402.value]),
    )
    return list(session.execute(stmt).all())


def deposits_from_block(session: Session, chain_id: int, first_block: int) -> list[DepositRow]:
    """Every live (not orphaned) deposit at or above ``first_block``: what a reorg back to there may undo."""
    live = [status.value for status in DepositStatus if status != DepositStatus.ORPHANED]
    stmt = select(deposits).where(
        deposits.c.chain_id == chain_id,
        deposits.c.status.in_(live),
        deposits.c.block_number >= first_block,
    )
    return list(session.execute(stmt).all())


def account_deposits(
    session: Session, account_id: int, limit: int, *, before: datetime | None = None, before_id: int | None = None
) -> list[DepositRow]:
    """An account's deposits, newest first; ``before`` (and ``before_id`` for ties) pages back."""
    stmt = select(deposits).where(deposits.c.account_id == account_id)
    if before is not None:
        stmt = stmt.where(
            or_(
                deposits.c.observed_at < before,
                and_(deposits.c.observed_at == before, deposits.c.id < (before_id or 2**63 - 1)),
            )
        )
    stmt = stmt.order_by(deposits.c.observed_at.desc(), deposits.c.id.desc()).limit(limit)
    return list(session.execute(stmt).all())
