"""The ledger's background work, in the scheduler's batch shape ``(session, now, batch_size) -> items processed``,
and the two jobs that run it.

Each function is one batch inside the caller's transaction (the job runner commits it). Both are state-driven
sweeps: what is due is read from the lots' expiry queue and the holds themselves, so a batch that is rolled back or
killed before its commit leaves nothing behind, and the next batch picks up exactly what is left.

Lot expiry is a good neighbour: a backlog (a million lots due at once) is worked off in batches back to back, and at
full speed those batches take a core's worth of CPU, WAL and locks from the customers' spends. So the job paces
itself (``Pacer``): while it works through a backlog it is busy at most ``worker_lot_expiry_busy_share`` of the time
(a setting), resting between batches, but never so long that it expires fewer than
``worker_lot_expiry_min_lots_per_second``. It rests before a batch touches the database, so that nothing is locked
or open meanwhile. On a machine whose cores the spends keep busy, the job takes from them about its busy share of
one core; the floor matters only when its batches are slowed down that much, and then costs them little (a lot costs
tens of microseconds of CPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from services.core.settings import Settings
from services.ledger.expiry import expire_lots
from services.ledger.holds import sweep_expired_holds
from services.worker.jobs import BatchFn, JobSpec

# A batch shorter than this is no burden to anyone: the next one follows at once (a handful of lots due, tests).
PACED_BATCH_SECONDS = 0.01
# The longest rest between two batches (the runner looks for a request to stop between batches).
LONGEST_REST_SECONDS = 1.0


class Pacer:
    """Keeps a job that runs batches back to back busy at most ``share`` of the time, and at ``min_rate`` items a
    second or more: before a batch, it rests until the previous batch's work is ``share`` of the time from that
    batch's start to now, or until that batch's items over that time fall to ``min_rate``, whichever comes first
    (at most ``LONGEST_REST_SECONDS``). A batch shorter than ``PACED_BATCH_SECONDS``, and a first batch after a pause
    (its previous one long enough ago), start at once; a failed batch has no items to count. One pacer serves one
    job of one process (the runner runs a job's batches one at a time)."""

    def __init__(
        self,
        share: float,
        *,
        min_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("a busy share is more than 0 and at most 1")
        if min_rate is not None and min_rate <= 0:
            raise ValueError("a minimum rate is more than 0")
        self.share = share
        self.min_rate = min_rate
        self._clock = clock
        self._sleep = sleep
        # (start, end, items) of the previous batch; items None when it failed.
        self._last: tuple[float, float, int | None] | None = None

    def rest(self) -> float:
        """Rest as long as the previous batch asks for; returns the seconds rested."""
        if self._last is None:
            return 0.0
        began, ended, items = self._last
        busy = ended - began
        if busy < PACED_BATCH_SECONDS:
            return 0.0
        period = busy / self.share
        if self.min_rate is not None and items is not None:
            period = min(period, items / self.min_rate)
        rest = min(began + period - self._clock(), LONGEST_REST_SECONDS)
        if rest <= 0:
            return 0.0
        self._sleep(rest)
        return rest

    def work(self, batch: Callable[[], int]) -> int:
        """Rest as the previous batch asks, then run ``batch`` (returning its items), timing it for the next one."""
        self.rest()
        began = self._clock()
        items: int | None = None
        try:
            items = batch()
            return items
        finally:
            self._last = (began, self._clock(), items)


class PacedBatch:
    """A batch function run through a pacer (``pacer.work``)."""

    def __init__(self, batch: BatchFn, pacer: Pacer) -> None:
        self.batch = batch
        self.pacer = pacer

    def __call__(self, session: Session, now: datetime, batch_size: int) -> int:
        return self.pacer.work(lambda: self.batch(session, now, batch_size))


# Both return what the batch examined, not what it changed: a lot or hold that changed under the lock still counts,
# so a full batch always leads to another and the run ends only when nothing due is left.


def expire_lots_batch(session: Session, now: datetime, batch_size: int) -> int:
    """Expire the unreserved remainder of up to ``batch_size`` lots whose time has come, in one journal transaction
    (on PostgreSQL, passing over the accounts busy right now: their lots count as examined and wait for a later
    batch). The job runs it paced (see the module's docstring)."""
    return expire_lots(session, now=now, limit=batch_size).lots_examined


def expire_holds_batch(session: Session, now: datetime, batch_size: int) -> int:
    """Release up to ``batch_size`` holds past their time to live."""
    return sweep_expired_holds(session, now=now, limit=batch_size)[0]


def lot_expiry_job(settings: Settings) -> JobSpec:
    pacer = Pacer(settings.worker_lot_expiry_busy_share, min_rate=settings.worker_lot_expiry_min_lots_per_second)
    return JobSpec(
        name="ledger.expire_lots",
        batch=PacedBatch(expire_lots_batch, pacer),
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
