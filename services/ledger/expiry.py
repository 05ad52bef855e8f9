"""Lot expiry: when a lot's time comes, its unreserved remainder moves to breakage.

The queue. Every lot has a row in ``lot_expiry_queue`` from its mint until the batch that deals with its time:
the job reads the queue, not the lots, so that expiring a lot changes no column an index of lots names (on
PostgreSQL the update is then HOT: no index gets a new entry). A lot the batch takes leaves the queue whatever it
finds on it (spent or reserved in full, it has nothing to expire now).

Works in bounded batches. One call takes up to ``limit`` lots from the queue whose time has come: the soonest, then,
account by account in the order their first lot falls due, every such lot of each account, so that a customer's
lots expire together. It posts one expiry transaction for the whole batch: one entry per account (what its lots
lost; all a customer sees of the batch in its history) and one breakage entry (the batch's total); each lot gets
one expiry movement, and its ``expired_credits`` grow by the same amount (what a clawback of the lot later takes
back from breakage). A reserved part stays until its hold resolves (see ``plans.plan_settle``).

Locks. A customer's operations serialise on the account row, so the batch locks the accounts of its lots, but on
PostgreSQL it does not wait for them: ``SKIP LOCKED`` passes over an account that a spend or a hold holds right
now, and its lots wait for a later batch (only a batch whose accounts are all busy waits for them). The pick and
the locks are one statement; the lots are read again once the locks are granted (so the batch expires what their
previous holders left), and every write is one more statement, so the locks last two statements and the commit.
The commit does not wait for the disk (a batch lost in a crash is simply due again, and any later commit that
depends on it flushes it first): call it in a transaction of its own, as the job does. On SQLite the
transaction's write lock excludes every other writer already.

Idempotency. The queue is the cursor, changed in the batch's own transaction: a batch killed before its commit
leaves nothing behind, and a rerun picks up exactly what is left. The job takes a lot's unreserved remainder once:
after that, whatever frees credits on the lot expires them at once in its own transaction (a hold resolving, a
reinstatement), so the lot is never due again. The transaction's key is derived
from what it expires (each lot's id, the credits it expires and its reserved credits), so the same expiry can
never be posted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.metrics import ledger_operation
from services.ledger.plans import plan_expiry
from services.ledger.store import store_for


@dataclass(frozen=True, slots=True)
class ExpiryBatch:
    lots_expired: int
    credits_expired: int
    # Customer accounts whose lots expired (each has one entry in the batch's transaction).
    accounts: int
    # Lots the batch looked at, including any whose account was busy or that changed before the lock; a full batch
    # means there may be more.
    lots_examined: int = 0
    # The batch's journal transaction (None when nothing expired).
    transaction_id: int | None = None


@ledger_operation("expiry")
def expire_lots(session: Session, *, now: datetime | None = None, limit: int = 5_000) -> ExpiryBatch:
    """Expire the unreserved remainder of (up to) the next ``limit`` lots whose time has come, as of ``now``."""
    now = now or utcnow()
    store = store_for(session)
    due = store.lock_due_lots(now, limit)
    if not due.taken:
        return ExpiryBatch(0, 0, 0, due.examined)
    transaction_id = store.write_expiry(plan_expiry(due, now))
    accounts = len({lot.account_id for lot in due.lots})
    credits = sum(lot.amount_credits for lot in due.lots)
    return ExpiryBatch(len(due.lots), credits, accounts, due.examined, transaction_id)
