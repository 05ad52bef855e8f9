"""The x402 rail's worker job: payments left ``settling`` (a process killed between broadcasting and recording the
outcome, or an outcome not known before the request's deadline) resolved from the chain (the transaction's
receipt, ``authorizationState`` and the ``AuthorizationUsed`` log) and finished: credited once, or failed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from services.core.settings import Settings
from services.worker.jobs import JobSpec
from services.x402.flows.purchase import build_rail, resolve_left_settling

RESOLVE_BATCH_SIZE = 50


def x402_job_specs(settings: Settings) -> list[JobSpec]:
    """The resolving job, when x402 is on."""
    rail = build_rail(settings)
    if rail is None:
        return []

    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        return resolve_left_settling(engine, rail, now=now, batch_size=batch_size)

    return [
        JobSpec(
            name="x402.resolve_settling",
            batch=None,
            step=step,
            interval_seconds=settings.x402_resolve_interval_seconds,
            batch_size=RESOLVE_BATCH_SIZE,
            description="Resolve x402 payments left settling from the chain; credit or fail each once.",
        )
    ]
