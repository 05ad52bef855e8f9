"""What a job is: the shape every domain's ``tasks.py`` builds and the worker runs.

A job is a batch function ``(session, now, batch_size) -> items processed`` plus how often it runs and how big its
batches are (both from settings). The runner (services.worker.runner) calls the function again and again, one
database transaction per call, until a call processes fewer items than the batch size. A job that must talk to the
network (a chain node, Stripe) gives a ``step`` instead: ``(engine, now, batch_size) -> items processed``, which
opens its own short units of work around its network calls, so no transaction is open while it waits on them.
Either way the function must:

- be idempotent and state-driven: read what is due from the database itself (never from a cursor kept in memory),
  so that a batch killed or rolled back before its commit leaves nothing behind and the next call resumes where
  the last committed one stopped;
- do at most ``batch_size`` items, and never commit (the runner does);
- make no network call while it holds row locks (fetch first, then open the batch that writes).

This module is the bottom of the worker: it imports no domain, so every domain's ``tasks.py`` imports it at module
level. The list of jobs the worker runs is composed on the top floor (services.app.jobs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.core.settings import Settings

# (session, now, batch_size) -> items processed, inside the runner's transaction.
BatchFn = Callable[[Session, datetime, int], int]
# (engine, now, batch_size) -> items processed, opening its own short units of work around network calls.
StepFn = Callable[[Engine, datetime, int], int]

JOB_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,99}$")


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    # (session, now, batch_size) -> items processed, in the runner's transaction; a result below batch_size ends
    # the run. None for a job that gives a ``step``.
    batch: BatchFn | None
    interval_seconds: float
    batch_size: int
    description: str = ""
    # (engine, now, batch_size) -> items processed, opening its own units of work (for jobs that call the network).
    step: StepFn | None = None
    # Whether a worker runs it as soon as it starts (else first one interval after the start).
    run_at_start: bool = True

    def __post_init__(self) -> None:
        if (self.batch is None) == (self.step is None):
            raise ValueError(f"job {self.name}: give either a batch function or a step, not both")
        if not JOB_NAME.match(self.name):
            raise ValueError(f"job name {self.name!r} must match {JOB_NAME.pattern}")
        if self.interval_seconds <= 0:
            raise ValueError(f"job {self.name}: interval_seconds must be positive")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"job {self.name}: batch_size must be a positive whole number")


# A factory builds a job from settings, or several (one per configured chain, say; none when its rail is off).
JobFactory = Callable[[Settings], JobSpec | list[JobSpec]]
