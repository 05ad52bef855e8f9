"""The alerts' worker job, ``alerts.evaluate``: find the crossings of low balances, budget thresholds and expiring
credits, and send each once (see services.alerts.evaluation). A step, as it opens a unit of work per page."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from services.alerts.evaluation import SWEEPS
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.worker.jobs import JobSpec, StepFn


def evaluate(engine: Engine, settings: Settings, now: datetime, batch_size: int) -> int:
    """One pass of every sweep, page by page, each page its own unit of work; returns the alerts fired or re-armed
    (at most ``batch_size``: a pass that changed that many runs again, and converges)."""
    changed = 0
    for sweep in SWEEPS:
        after = 0
        while True:
            with unit_of_work(engine) as session:
                seen, page_changed, after = sweep(session, settings, after, batch_size, now)
            changed += page_changed
            if seen < batch_size:
                break
    return min(changed, batch_size)


def evaluate_step(settings: Settings) -> StepFn:
    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        return evaluate(engine, settings, now, batch_size)

    return step


def alerts_job(settings: Settings) -> JobSpec:
    return JobSpec(
        name="alerts.evaluate",
        batch=None,
        step=evaluate_step(settings),
        interval_seconds=settings.alerts_interval_seconds,
        batch_size=settings.alerts_batch_size,
        description="Alert once per crossing: low balances, budgets at 50/80/100 %, credits expiring within 30 days.",
    )
