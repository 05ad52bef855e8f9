"""The worker's table.

- ``job_health``: one row per job, what its latest runs did: when the last run started and finished, the last
  success, the last error and its message, the items processed (last run and in total), and the backoff state of
  a failing job. Written in short transactions of its own at the start and end of each run, never inside the
  job's batches, so a batch rolled back does not take its run's record with it (and the other way round).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from services.core.db import UTCDateTime


class RunOutcome(StrEnum):
    # Written at the start of a run; a worker killed during the run leaves it until the next run starts.
    RUNNING = "running"
    # Every due item was processed.
    SUCCESS = "success"
    # A batch failed (the database went away, a bug): committed batches stay, the rest is retried after a backoff.
    ERROR = "error"
    # The worker was asked to stop: the running batch finished and was committed, the rest waits for the next run.
    STOPPED = "stopped"
    # Another worker holds the job's lock (never written to the table: nothing ran).
    SKIPPED = "skipped"


def _timestamp() -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=True)


def _count() -> Any:
    return Field(default=0, sa_type=BigInteger, nullable=False)


class JobHealth(SQLModel, table=True):
    __tablename__ = "job_health"

    job: str = Field(primary_key=True, max_length=100)
    # The worker process ("host:pid") that started the last run.
    owner: str | None = Field(default=None, max_length=200)
    last_outcome: str | None = Field(default=None, max_length=16)
    last_started_at: datetime | None = _timestamp()
    last_finished_at: datetime | None = _timestamp()
    last_succeeded_at: datetime | None = _timestamp()
    last_failed_at: datetime | None = _timestamp()
    # "ExceptionType: message" of the last failed run (kept after later successes, with last_failed_at).
    last_error: str | None = Field(default=None, max_length=2000)
    last_items: int = _count()
    last_batches: int = _count()
    last_duration_ms: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    total_runs: int = _count()
    total_failures: int = _count()
    total_items: int = _count()
    # Failed runs in a row; 0 once a run succeeds. A failing job is tried again at retry_at.
    consecutive_failures: int = _count()
    retry_at: datetime | None = _timestamp()
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
