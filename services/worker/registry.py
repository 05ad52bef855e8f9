"""The worker's jobs: what each one is, and the list the worker runs.

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

Each domain keeps its batch functions in its ``tasks.py``. A domain adds its jobs by appending a factory
``(settings) -> JobSpec`` to ``JOB_FACTORIES`` below, or, from code that is not part of this repository's domains
(or a test), by calling :func:`register_job`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.alerts.tasks import alerts_job
from services.card.tasks import CARD_JOB_FACTORIES
from services.core.settings import Settings
from services.events.tasks import events_job
from services.finance.tasks import finance_job_specs
from services.ledger.tasks import expire_holds_batch, expire_lots_batch
from services.outbox.tasks import outbox_job
from services.usdc.tasks import usdc_job_specs

BatchFn = Callable[[Session, datetime, int], int]
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


# The jobs of this repository's domains, in the order they are listed. The rails append theirs here.
JOB_FACTORIES: list[JobFactory] = [
    lot_expiry_job,
    hold_expiry_job,
    *CARD_JOB_FACTORIES,
    usdc_job_specs,
    finance_job_specs,
    outbox_job,
    events_job,
    alerts_job,
]

_registered: dict[str, JobFactory] = {}


def register_job(name: str, factory: JobFactory) -> None:
    """Add a job to :func:`default_jobs` (registering a name again replaces its factory)."""
    if not JOB_NAME.match(name):
        raise ValueError(f"job name {name!r} must match {JOB_NAME.pattern}")
    _registered[name] = factory


def unregister_job(name: str) -> None:
    _registered.pop(name, None)


def default_jobs(settings: Settings) -> list[JobSpec]:
    """Every job the worker runs, built from ``settings``."""
    specs: list[JobSpec] = []
    for factory in JOB_FACTORIES:
        built = factory(settings)
        specs.extend(built if isinstance(built, list) else [built])
    for name, registered in _registered.items():
        spec = registered(settings)
        if not isinstance(spec, JobSpec) or spec.name != name:
            raise ValueError(f"the job registered as {name!r} must build one job named {name!r}")
        specs.append(spec)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"jobs registered twice: {', '.join(duplicates)}")
    return specs


def enabled_jobs(settings: Settings) -> list[JobSpec]:
    """The jobs this worker runs: those ``settings.worker_jobs`` names, or every job when it names none."""
    specs = default_jobs(settings)
    if not settings.worker_jobs:
        return specs
    known = {spec.name for spec in specs}
    unknown = sorted(set(settings.worker_jobs) - known)
    if unknown:
        raise ValueError(f"CREDITRAIL_WORKER_JOBS names unknown jobs: {', '.join(unknown)}; known: {sorted(known)}")
    return [spec for spec in specs if spec.name in settings.worker_jobs]
