"""The list of jobs the worker runs: every domain's job factories, gathered here.

What a job is (:class:`~services.worker.jobs.JobSpec` and the rules its functions keep) is in services.worker.jobs.
Each domain keeps its batch functions and job factories in its ``tasks.py``. A domain adds its jobs by appending a
factory ``(settings) -> JobSpec`` to ``JOB_FACTORIES`` below, or, from code that is not part of this repository's
domains (or a test), by calling :func:`register_job`.
"""

from __future__ import annotations

from functools import partial

from services.alerts.tasks import alerts_job
from services.card.repository import card_labels_of_purchases
from services.card.tasks import CARD_JOB_FACTORIES
from services.core.settings import Settings
from services.events.tasks import events_job
from services.finance.tasks import finance_job_specs
from services.ledger.tasks import hold_expiry_job, lot_expiry_job
from services.outbox.tasks import outbox_job
from services.usdc.tasks import usdc_job_specs
from services.wallets.tasks import wallet_purge_job
from services.worker.jobs import JOB_NAME, JobFactory, JobSpec
from services.x402.tasks import x402_job_specs

# The jobs of this repository's domains, in the order they are listed. The rails append theirs here.
JOB_FACTORIES: list[JobFactory] = [
    lot_expiry_job,
    hold_expiry_job,
    *CARD_JOB_FACTORIES,
    usdc_job_specs,
    finance_job_specs,
    # Receipts name the card that paid: the card rail says which, the outbox (below the rails) asks.
    partial(outbox_job, cards_of_purchases=card_labels_of_purchases),
    events_job,
    alerts_job,
    x402_job_specs,
    wallet_purge_job,
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
