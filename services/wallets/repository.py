"""The wallets' queries. Nothing here commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlmodel import Session

from services.core.db import insert_for, table_of
from services.wallets.models import Wallet

wallets = table_of(Wallet)


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


def wallets_of_account(session: Session, account_id: int) -> list[Any]:
    return list(session.execute(select(wallets).where(wallets.c.account_id == account_id).order_by(wallets.c.id)))


def delete_wallet(session: Session, *, address: str, account_id: int) -> bool:
    """Unlink ``address`` from ``account_id``; whether it was linked to it."""
    stmt = delete(wallets).where(wallets.c.address == address, wallets.c.account_id == account_id)
    return session.execute(stmt.returning(wallets.c.id)).scalar() is not None
