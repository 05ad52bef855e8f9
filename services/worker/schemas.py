"""API shapes for job health."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class JobHealthOut(BaseModel):
    job: str
    # never_run, running, ok, failing (consecutive_failures > 0), stopped (the worker stopped during the run).
    status: str
    description: str
    interval_seconds: float | None
    batch_size: int | None
    # The worker process ("host:pid") that ran the job last.
    owner: str | None
    last_outcome: str | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_succeeded_at: datetime | None
    last_failed_at: datetime | None
    last_error: str | None
    last_items: int
    last_batches: int
    last_duration_ms: int | None
    total_runs: int
    total_failures: int
    total_items: int
    consecutive_failures: int
    # When a failing job is tried again.
    retry_at: datetime | None
