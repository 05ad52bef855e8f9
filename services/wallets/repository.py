"""The wallets' queries. Nothing here commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlmodel import Session

from services.core.db import insert_for, table_of
from services.wallets.models import Wallet, WalletChallenge, WalletRequestNonce

wallets = table_of(Wallet)
request_nonces = table_of(WalletRequestNonce)
challenges = table_of(WalletChallenge)


def wallet_by_address(session: Session, address: str) -> Any:
    return session.execute(select(wallets).where(wallets.c.address == address)).first()


def account_of_address(session: Session, address: str) -> int | None:
    found = session.execute(select(wallets.c.account_id).where(wallets.c.address == address)).scalar()
    return int(found) if found is not None else None


def insert_wallet(session: Session, *, address: str, account_id: int, linked_via: str, now: datetime) -> int | None:
    """Link ``address`` to ``account_id``; None when the address is linked already (to whichever account)."""
    stmt = (
        insert_for(session, wallets)
        .values(address=address, account_id=account_id, linked_via=linked_via, created_at=now)
        .on_conflict_do_nothing(index_elements=["address"])
        .returning(wallets.c.id)
    )
    inserted = session.execute(stmt).scalar()
    return int(inserted) if inserted is not None else None


def wallets_of_account(session: Session, account_id: int, *, after_id: int = 0, limit: int | None = None) -> list[Any]:
    stmt = select(wallets).where(wallets.c.account_id == account_id, wallets.c.id > after_id).order_by(wallets.c.id)
    return list(session.execute(stmt if limit is None else stmt.limit(limit)))


def delete_wallet(session: Session, *, address: str, account_id: int) -> bool:
    """Unlink ``address`` from ``account_id``; whether it was linked to it."""
    stmt = delete(wallets).where(wallets.c.address == address, wallets.c.account_id == account_id)
    return session.execute(stmt.returning(wallets.c.id)).scalar() is not None


def use_request_nonce(session: Session, *, address: str, nonce: str, signed_at: datetime, now: datetime) -> bool:
    """Record a signed request's nonce as used; False when this wallet used it before."""
    stmt = (
        insert_for(session, request_nonces)
        .values(address=address, nonce=nonce, signed_at=signed_at, used_at=now)
        .on_conflict_do_nothing(index_elements=["address", "nonce"])
        .returning(request_nonces.c.id)
    )
    return session.execute(stmt).scalar() is not None


def purge_request_nonces(session: Session, *, signed_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` used nonces signed before ``signed_before``; how many went."""
    due = select(request_nonces.c.id).where(request_nonces.c.signed_at < signed_before).limit(limit)
    ids = [int(row_id) for row_id in session.execute(due).scalars()]
    if ids:
        session.execute(delete(request_nonces).where(request_nonces.c.id.in_(ids)))
    return len(ids)


def purge_challenges(session: Session, *, expired_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` challenges that expired before ``expired_before``; how many went."""
    due = select(challenges.c.id).where(challenges.c.expires_at < expired_before).limit(limit)
    ids = [int(row_id) for row_id in session.execute(due).scalars()]
    if ids:
        session.execute(delete(challenges).where(challenges.c.id.in_(ids)))
    return len(ids)


def insert_challenge(
    session: Session, *, nonce: str, purpose: str, account_id: int | None, now: datetime, expires_at: datetime
) -> None:
    session.execute(
        insert_for(session, challenges).values(
            nonce=nonce, purpose=purpose, account_id=account_id, issued_at=now, expires_at=expires_at
        )
    )


def use_challenge(session: Session, *, nonce: str, purpose: str, now: datetime) -> Any:
    """Mark the live, unused challenge ``nonce`` of ``purpose`` used, in one conditional write; its row, or None
    when there is no such challenge (unknown, another purpose, expired or used already)."""
    stmt = (
        update(challenges)
        .where(
            challenges.c.nonce == nonce,
            challenges.c.purpose == purpose,
            challenges.c.used_at.is_(None),
            challenges.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(challenges.c.id, challenges.c.account_id, challenges.c.expires_at)
    )
    return session.execute(stmt).first()


def challenge_by_nonce(session: Session, nonce: str) -> Any:
    return session.execute(select(challenges).where(challenges.c.nonce == nonce)).first()
