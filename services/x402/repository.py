"""The x402 payments' queries (SQLAlchemy Core on the caller's session; nothing here commits)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlmodel import Session

from services.core.db import insert_for, table_of
from services.x402.models import PaymentStatus, X402Payment

payments = table_of(X402Payment)


def insert_settling(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a payment as ``settling``; None when its authorization or its payment identifier is there already
    (either unique constraint: the one payment, sent again)."""
    stmt = (
        insert_for(session, payments)
        .values(status=PaymentStatus.SETTLING, **values)
        .on_conflict_do_nothing()
        .returning(payments.c.id)
    )
    inserted = session.execute(stmt).scalar()
    return None if inserted is None else int(inserted)


def find_duplicate(
    session: Session, *, chain_id: int, payer: str, auth_nonce: str, payment_identifier: str | None
) -> Any:
    """The payment with this authorization or this payment identifier (the identifier's first)."""
    same_authorization = and_(
        payments.c.chain_id == chain_id, payments.c.payer == payer, payments.c.auth_nonce == auth_nonce
    )
    condition = same_authorization
    if payment_identifier is not None:
        condition = or_(payments.c.payment_identifier == payment_identifier, same_authorization)
    rows = session.execute(select(payments).where(condition).order_by(payments.c.id)).all()
    if payment_identifier is not None:
        for row in rows:
            if row.payment_identifier == payment_identifier:
                return row
    return rows[0] if rows else None


def get(session: Session, payment_id: int) -> Any:
    return session.execute(select(payments).where(payments.c.id == payment_id)).one()


def record_broadcast(session: Session, payment_id: int, tx_hash: str, now: datetime) -> None:
    session.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.status == PaymentStatus.SETTLING)
        .values(tx_hash=tx_hash, updated_at=now)
    )


def mark_settled(
    session: Session, payment_id: int, *, tx_hash: str, deposit_id: int | None, lot_id: int | None, now: datetime
) -> None:
    session.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.status == PaymentStatus.SETTLING)
        .values(
            status=PaymentStatus.SETTLED,
            tx_hash=tx_hash,
            deposit_id=deposit_id,
            lot_id=lot_id,
            settled_at=now,
            updated_at=now,
        )
    )


def mark_failed(session: Session, payment_id: int, *, code: str, message: str | None, now: datetime) -> None:
    session.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.status == PaymentStatus.SETTLING)
        .values(status=PaymentStatus.FAILED, failure_code=code, failure_message=(message or "")[:500], updated_at=now)
    )


def left_settling(session: Session, *, before: datetime, limit: int) -> list[Any]:
    """Payments still settling that started before ``before`` (a crash, or an outcome not known in time)."""
    stmt = (
        select(payments)
        .where(payments.c.status == PaymentStatus.SETTLING, payments.c.created_at < before)
        .order_by(payments.c.created_at, payments.c.id)
        .limit(limit)
    )
    return list(session.execute(stmt).all())
