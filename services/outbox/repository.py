"""The outbox's queries. Reads return rows typed by their shape in ``services.outbox.rows``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, select, update
from sqlmodel import Session

from services.core.db import insert_for, table_of
from services.ledger.repository import entries, lots
from services.outbox.models import MessageStatus, OutboxMessage
from services.outbox.rows import MessageRow

messages: Table = table_of(OutboxMessage)


def insert_message(session: Session, values: dict[str, Any]) -> bool:
    """Insert a message unless one with its dedupe key exists; whether it was inserted."""
    stmt = insert_for(session, messages).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def get_message(session: Session, message_id: int) -> MessageRow | None:
    return session.execute(select(messages).where(messages.c.id == message_id)).first()


def message_by_key(session: Session, dedupe_key: str) -> MessageRow | None:
    return session.execute(select(messages).where(messages.c.dedupe_key == dedupe_key)).first()


def due_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Pending messages whose time has come, oldest first, locked (PostgreSQL: others' locked rows passed over)."""
    stmt = (
        select(messages.c.id)
        .where(messages.c.status == MessageStatus.PENDING, messages.c.next_attempt_at <= now)
        .order_by(messages.c.next_attempt_at, messages.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [int(row) for row in session.execute(stmt).scalars()]


def claim(session: Session, ids: Sequence[int], now: datetime, lease_until: datetime) -> list[MessageRow]:
    """Lease the messages (still pending, still due) to this sender until ``lease_until``; counts the attempt."""
    if not ids:
        return []
    stmt = (
        update(messages)
        .where(
            messages.c.id.in_(ids),
            messages.c.status == MessageStatus.PENDING,
            messages.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=lease_until, attempts=messages.c.attempts + 1)
        .returning(*messages.c)
    )
    return sorted(session.execute(stmt).all(), key=lambda row: row.id)


_set_content = (
    update(messages)
    .where(messages.c.id == bindparam("id_"))
    .values(subject=bindparam("subject"), body_text=bindparam("body_text"), body_html=bindparam("body_html"))
)


def set_contents(session: Session, contents: Sequence[dict[str, Any]]) -> None:
    """Write messages' renderings (``id_``, ``subject``, ``body_text``, ``body_html`` each), in one statement."""
    if contents:
        session.execute(_set_content, list(contents))


def fail_message(session: Session, message_id: int, error: str) -> None:
    session.execute(
        update(messages).where(messages.c.id == message_id).values(status=MessageStatus.FAILED, last_error=error)
    )


def lots_with_balance_after(session: Session, lot_ids: Sequence[int]) -> dict[int, tuple[Any, int]]:
    """Each lot, with its account's balance right after the lot's mint (its journal entries up to that
    transaction), in one query."""
    if not lot_ids:
        return {}
    balance = (
        select(func.coalesce(func.sum(entries.c.amount_credits), 0))
        .where(entries.c.account_id == lots.c.account_id, entries.c.transaction_id <= lots.c.mint_transaction_id)
        .scalar_subquery()
    )
    rows = session.execute(select(lots, balance.label("balance_after_credits")).where(lots.c.id.in_(lot_ids)))
    return {int(row.id): (row, int(row.balance_after_credits)) for row in rows}


def record(session: Session, message_id: int, attempt: int, **values: Any) -> bool:
    """Record an attempt's result, only if no later attempt took the message over meanwhile."""
    result = session.execute(
        update(messages)
        .where(
            messages.c.id == message_id,
            messages.c.attempts == attempt,
            messages.c.status == MessageStatus.PENDING,
        )
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def balance_after(session: Session, account_id: int, transaction_id: int) -> int:
    """The account's balance right after a transaction: its journal entries up to that one."""
    stmt = select(func.coalesce(func.sum(entries.c.amount_credits), 0)).where(
        and_(entries.c.account_id == account_id, entries.c.transaction_id <= transaction_id)
    )
    return int(session.execute(stmt).scalar_one())
