"""Lot expiry: when a lot's time comes, its unreserved remainder moves to breakage.

Works in bounded batches: one call takes the next ``limit`` lots due, locks their accounts in id order, and posts
one expiry transaction per account. A reserved part stays until its hold resolves (see holds._settle).
The state is the cursor: a lot is due while ``remaining > reserved`` and its time has come, so a batch killed
before its commit leaves nothing behind, and a rerun picks up exactly what is left.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session

from services.core.clock import utcnow
from services.ledger import repository as repo
from services.ledger.common import movement_row
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.system_accounts import SystemAccount

lots = repo.lots


@dataclass(frozen=True, slots=True)
class ExpiryBatch:
    lots_expired: int
    credits_expired: int
    accounts: int
    # Lots the batch looked at (some may have changed under the lock); a full batch means there may be more.
    lots_examined: int = 0


def expire_lots(session: Session, *, now: datetime | None = None, limit: int = 5_000) -> ExpiryBatch:
    now = now or utcnow()
    due_condition = (lots.c.remaining_credits > lots.c.reserved_credits, lots.c.expires_at <= now)
    candidates = session.execute(
        select(lots.c.id, lots.c.account_id).where(*due_condition).order_by(lots.c.expires_at, lots.c.id).limit(limit)
    ).all()
    if not candidates:
        return ExpiryBatch(0, 0, 0)
    repo.lock_accounts(session, (row.account_id for row in candidates))
    # Read again under the locks: a hold or a spend may have changed them since. A lot's latest movement tells
    # apart two visits to the same state (expired, clawed back, reinstated, due again at the same instant).
    last_movement = select(func.max(repo.movements.c.id)).where(repo.movements.c.lot_id == lots.c.id).scalar_subquery()
    current = session.execute(
        select(
            lots.c.id,
            lots.c.account_id,
            lots.c.remaining_credits,
            lots.c.reserved_credits,
            last_movement.label("last_movement_id"),
        )
        .where(lots.c.id.in_([row.id for row in candidates]), *due_condition)
        .order_by(lots.c.id)
    ).all()
    by_account: dict[int, list[Any]] = defaultdict(list)
    for row in current:
        by_account[row.account_id].append(row)
    if not by_account:
        return ExpiryBatch(0, 0, 0, len(candidates))

    account_ids = sorted(by_account)
    txn_rows = []
    for account_id in account_ids:
        account_lots = by_account[account_id]
        state = ",".join(
            f"{r.id}:{r.remaining_credits}:{r.reserved_credits}:{r.last_movement_id}" for r in account_lots
        )
        digest = hashlib.sha256(state.encode()).hexdigest()[:32]
        txn_rows.append(
            {
                "kind": TransactionKind.EXPIRY,
                "idempotency_key": f"expiry:{account_id}:{now.isoformat()}:{digest}",
                "request_hash": None,
                "account_id": account_id,
                "created_at": now,
                "description": None,
                "details": {"lots": len(account_lots)},
            }
        )
    txn_ids = repo.insert_transactions(session, txn_rows)

    entry_rows: list[dict[str, Any]] = []
    movement_rows: list[dict[str, Any]] = []
    total = 0
    for account_id, txn_id in zip(account_ids, txn_ids, strict=True):
        account_total = 0
        for lot in by_account[account_id]:
            expiring = lot.remaining_credits - lot.reserved_credits
            account_total += expiring
            movement_rows.append(movement_row(lot.id, txn_id, MovementKind.EXPIRY, -expiring, now))
        entry_rows.append(
            {
                "transaction_id": txn_id,
                "account_id": account_id,
                "amount_credits": -account_total,
                "created_at": now,
            }
        )
        entry_rows.append(
            {
                "transaction_id": txn_id,
                "account_id": SystemAccount.BREAKAGE,
                "amount_credits": account_total,
                "created_at": now,
            }
        )
        total += account_total
    repo.insert_entries(session, entry_rows)
    session.execute(
        update(lots)
        .where(lots.c.id.in_([row.id for row in current]))
        .values(
            expired_credits=lots.c.expired_credits + lots.c.remaining_credits - lots.c.reserved_credits,
            remaining_credits=lots.c.reserved_credits,
        )
    )
    repo.insert_movements(session, movement_rows)
    return ExpiryBatch(len(current), total, len(account_ids), len(candidates))
