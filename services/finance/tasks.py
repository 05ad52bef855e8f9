"""Finance's worker job: reconcile the last whole UTC days, every rail that is on, once a day (first one interval
after the worker starts, not at its start).

It reconciles yesterday and, again, the days before it (``finance_reconcile_days``), so items that settled late
(a webhook retried the next morning, a deposit confirmed after midnight) end up matched. Each run is idempotent
(one run per rail and period, replaced in place), so a job killed half way and started again changes nothing
twice. A rail that fails does not stop the others; the job records the failures and backs off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.engine import Engine

from chain.rpc import ChainReader
from services.card.stripe_client import StripeGateway
from services.core.settings import Settings
from services.finance.flows.reconcile import previous_days, rails_for, reconcile_period
from services.worker.jobs import JobSpec

log = logging.getLogger(__name__)

# Runs per call, at most: far above what one call makes, so the runner never calls it twice in a row.
RECONCILE_BATCH_SIZE = 10_000


class ReconciliationJobFailed(RuntimeError):
    pass


def reconcile_recent_days(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    gateway: StripeGateway | None = None,
    readers: Mapping[int, ChainReader] | None = None,
) -> int:
    """Reconcile each rail that is on over each of the last ``finance_reconcile_days`` days; the runs made."""
    runs = 0
    failures: list[str] = []
    for start, end in previous_days(now, settings.finance_reconcile_days):
        for rail in rails_for(settings, "all"):
            try:
                made = reconcile_period(
                    engine,
                    settings,
                    rail=rail,
                    period_start=start,
                    period_end=end,
                    gateway=gateway,
                    readers=readers,
                    now=now,
                )
                runs += len(made)
            except Exception as exc:
                log.warning("reconciliation of %s for %s failed: %s", rail, start.date().isoformat(), exc)
                failures.append(f"{rail} {start.date().isoformat()}: {exc}")
    if failures:
        raise ReconciliationJobFailed("; ".join(failures)[:2000])
    return runs


def finance_job_specs(settings: Settings) -> list[JobSpec]:
    """``finance.reconcile``, when at least one rail is on."""
    if not rails_for(settings, "all"):
        return []

    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        return reconcile_recent_days(engine, settings, now)

    return [
        JobSpec(
            name="finance.reconcile",
            batch=None,
            step=step,
            interval_seconds=settings.finance_reconcile_interval_seconds,
            batch_size=RECONCILE_BATCH_SIZE,
            description="Reconcile the last days of each rail against the ledger; raise exceptions for what differs.",
            # On its schedule only: at a worker's start it would compete with the rails catching up after a restart.
            run_at_start=False,
        )
    ]
