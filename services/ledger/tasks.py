"""The ledger's background work, in the scheduler's batch shape ``(session, now, batch_size) -> items processed``,
and the two jobs that run it.

Each function is one batch inside the caller's transaction (the job runner commits it). Both are state-driven
sweeps: what is due is read from the lots and holds themselves, so a batch that is rolled back or killed before its
commit leaves nothing behind, and the next batch picks up exactly what is left.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.core.settings import Settings
from services.ledger.expiry import expire_lots
from services.ledger.holds import sweep_expired_holds
from services.worker.jobs import JobSpec

# Both return what the batch examined, not what it changed: a lot or hold that changed under the lock still counts,
# so a full batch always leads to another and the run ends only when nothing due is left.


def expire_lots_batch(session: Session, now: datetime, batch_size: int) -> int:
    """Expire the unreserved remainder of up to ``batch_size`` lots whose time has come, in one journal transaction
    (on PostgreSQL, passing over the accounts busy right now: their lots count as examined and wait for a later
    batch)."""
    return expire_lots(session, now=now, limit=batch_size).lots_examined


def expire_holds_batch(session: Session, now: datetime, batch_size: int) -> int:
    """Release up to ``batch_size`` holds past their time to live."""
    return sweep_expired_holds(session, now=now, limit=batch_size)[0]


def lot_expiry_job(settings: Settings) -> JobSpec:
    return JobSpec(
        name="ledger.expire_lots",
        batch=expire_lots_batch,
        interval_seconds=settings.worker_lot_expiry_interval_seconds,
        batch_size=settings.worker_lot_expiry_batch_size,
        description="Move the unreserved remainder of lots whose time has come to breakage.",
    )


def hold_expiry_job(settings: Settings) -> JobSpec:
    return JobSpec(
        name="ledger.expire_holds",
        batch=expire_holds_batch,
        interval_seconds=settings.worker_hold_expiry_interval_seconds,
        batch_size=settings.worker_hold_expiry_batch_size,
        description="Release holds not captured or released before their time to live.",
    )
