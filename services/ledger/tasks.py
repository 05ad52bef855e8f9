"""The ledger's background work, in the scheduler's batch shape ``(session, now, batch_size) -> items processed``,
and the two jobs that run it.

Each function is one batch inside the caller's transaction (the job runner commits it). Both are state-driven
sweeps: what is due is read from the lots and holds themselves, so a batch that is rolled back or killed before its
commit leaves nothing behind, and the next batch picks up exactly what is left.

Lot expiry is a good neighbour: a backlog (a million lots due at once) is worked off in batches back to back, and at
full speed those batches take a core's worth of CPU, WAL and locks from the customers' spends. So the job paces
itself (``Pacer``): it is busy at most ``LOT_EXPIRY_BUSY_SHARE`` of the time while it works through a backlog,
resting between batches. It rests before a batch touches the database, so that nothing is locked or open meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlmodel import Session

from services.core.settings import Settings
from services.ledger.expiry import expire_lots
from services.ledger.holds import sweep_expired_holds
from services.worker.jobs import JobSpec

T = TypeVar("T")

# Lot expiry's share of the time while it works through a backlog: at a fifth, the spends beside it keep about nine
# tenths of their rate, and a million lots due at once (at the 10,000 lots a second or more a batch expires at full
# speed here) still expire within 10 minutes.
LOT_EXPIRY_BUSY_SHARE = 0.2
# A batch shorter than this is no burden to anyone: the next one follows at once (a handful of lots due, tests).
PACED_BATCH_SECONDS = 0.01
# The longest rest between two batches (the runner looks for a request to stop between batches).
LONGEST_REST_SECONDS = 1.0


class Pacer:
    """Keeps a job that runs batches back to back busy at most ``share`` of the time: before a batch, it rests until
    the previous batch's work is ``share`` of the time from that batch's start to now (at most
    ``LONGEST_REST_SECONDS``). A batch shorter than ``PACED_BATCH_SECONDS``, and a first batch after a pause (its
    previous one long enough ago), start at once. One pacer serves one job of one process (the runner runs a job's
    batches one at a time)."""

    def __init__(
        self,
        share: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("a busy share is more than 0 and at most 1")
        self.share = share
        self._clock = clock
        self._sleep = sleep
        self._last: tuple[float, float] | None = None

    def rest(self) -> float:
        """Rest as long as the previous batch asks for; returns the seconds rested."""
        if self._last is None:
            return 0.0
        began, ended = self._last
        busy = ended - began
        if busy < PACED_BATCH_SECONDS:
            return 0.0
        rest = min(began + busy / self.share - self._clock(), LONGEST_REST_SECONDS)
        if rest <= 0:
            return 0.0
        self._sleep(rest)
        return rest

    def work(self, batch: Callable[[], T]) -> T:
        """Rest as the previous batch asks, then run ``batch``, timing it for the next one."""
        self.rest()
        began = self._clock()
        try:
            return batch()
        finally:
            self._last = (began, self._clock())


_lot_expiry_pacer = Pacer(LOT_EXPIRY_BUSY_SHARE)

# Both return what the batch examined, not what it changed: a lot or hold that changed under the lock still counts,
# so a full batch always leads to another and the run ends only when nothing due is left.


def expire_lots_batch(session: Session, now: datetime, batch_size: int) -> int:
    """Expire the unreserved remainder of up to ``batch_size`` lots whose time has come, in one journal transaction
    (on PostgreSQL, passing over the accounts busy right now: their lots count as examined and wait for a later
    batch). Paced: see the module's docstring."""
    return _lot_expiry_pacer.work(lambda: expire_lots(session, now=now, limit=batch_size).lots_examined)


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
