"""The worker's row shapes (see ``services.core.rows``): SQLAlchemy's rows as they come, typed by a Protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.core.rows import RowShape


class JobHealthRow(RowShape, Protocol):
    """A row of ``job_health``."""

    job: str
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
    retry_at: datetime | None
    updated_at: datetime
