"""The wallets' background work: forget what can no longer be replayed.

One job, in the scheduler's batch shape ``(session, now, batch_size) -> items processed``: it deletes the nonces of
signed requests whose timestamp is outside the window (such a request is refused for its timestamp anyway) and the
challenges that expired (a sign-in or link nonce is refused once expired, used or not). State-driven: what is due is
read from the rows themselves, so a batch rolled back leaves nothing behind.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from services.core.settings import Settings
from services.wallets import repository as repo
from services.worker.jobs import JobSpec


def purge_batch(session: Session, now: datetime, batch_size: int, *, window_seconds: int) -> int:
    """Delete up to ``batch_size`` used nonces signed before the window, then, with what is left of the batch,
    expired challenges; how many rows went."""
    nonces = repo.purge_request_nonces(session, signed_before=now - timedelta(seconds=window_seconds), limit=batch_size)
    if nonces >= batch_size:
        return nonces
    return nonces + repo.purge_challenges(session, expired_before=now, limit=batch_size - nonces)


def wallet_purge_job(settings: Settings) -> JobSpec:
    window_seconds = settings.wallet_signature_window_seconds

    def batch(session: Session, now: datetime, batch_size: int) -> int:
        return purge_batch(session, now, batch_size, window_seconds=window_seconds)

    return JobSpec(
        name="wallets.purge",
        batch=batch,
        interval_seconds=settings.worker_wallet_purge_interval_seconds,
        batch_size=settings.worker_wallet_purge_batch_size,
        description="Forget signed requests' nonces outside the time window, and expired sign-in and link challenges.",
    )
