"""Job health: what the runner writes at the start and end of each run, and what the admin endpoint and
``creditrail jobs`` read.

The writers take the caller's session and never commit: the runner opens a short transaction of its own for each
write (never the transaction of a batch, nor a customer's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.db import insert_for, table_of
from services.worker.jobs import JobSpec
from services.worker.models import JobHealth, RunOutcome
from services.worker.rows import JobHealthRow
from services.worker.schemas import JobHealthOut

job_health = table_of(JobHealth)

ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class JobRun:
    """What one run of a job did (also the fields of its log line)."""

    job: str
    outcome: RunOutcome
    owner: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    items: int
    batches: int
    error: str | None = None
    # Failed runs in a row, this one included (0 unless the outcome is an error).
    consecutive_failures: int = 0
    # When a failed job is tried again.
    retry_at: datetime | None = None


def _insert_missing(session: Session, job: str, now: datetime) -> None:
    session.execute(
        insert_for(session, job_health)
        .values(
            job=job,
            last_items=0,
            last_batches=0,
            total_runs=0,
            total_failures=0,
            total_items=0,
            consecutive_failures=0,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["job"])
    )


def record_start(session: Session, *, job: str, owner: str, started_at: datetime) -> None:
    _insert_missing(session, job, started_at)
    session.execute(
        update(job_health)
        .where(job_health.c.job == job)
        .values(owner=owner, last_outcome=RunOutcome.RUNNING, last_started_at=started_at, updated_at=started_at)
    )


def record_finish(session: Session, run: JobRun) -> None:
    """The end of a run (a skipped run is not recorded: nothing ran)."""
    if run.outcome in (RunOutcome.SKIPPED, RunOutcome.RUNNING):
        raise ValueError(f"a {run.outcome} run has nothing to record")
    _insert_missing(session, run.job, run.finished_at)
    c = job_health.c
    values: dict[str, Any] = {
        "owner": run.owner,
        "last_outcome": run.outcome,
        "last_finished_at": run.finished_at,
        "last_items": run.items,
        "last_batches": run.batches,
        "last_duration_ms": run.duration_ms,
        "total_runs": c.total_runs + 1,
        "total_items": c.total_items + run.items,
        "consecutive_failures": run.consecutive_failures,
        "retry_at": run.retry_at,
        "updated_at": utcnow(),
    }
    if run.outcome == RunOutcome.ERROR:
        values |= {
            "last_failed_at": run.finished_at,
            "last_error": (run.error or "")[:ERROR_MAX_CHARS],
            "total_failures": c.total_failures + 1,
        }
    elif run.outcome == RunOutcome.SUCCESS:
        values["last_succeeded_at"] = run.finished_at
    # A run recorded late (the database was away when it ended) must not hide a later start.
    values["last_started_at"] = case(
        (c.last_started_at.is_(None) | (c.last_started_at < run.started_at), run.started_at),
        else_=c.last_started_at,
    )
    session.execute(update(job_health).where(c.job == run.job).values(**values))


def _status(row: JobHealthRow | None) -> str:
    if row is None or row.last_outcome is None:
        return "never_run"
    if row.last_outcome == RunOutcome.RUNNING:
        return "running"
    if row.consecutive_failures:
        return "failing"
    if row.last_outcome == RunOutcome.STOPPED:
        return "stopped"
    return "ok"


def _view(name: str, row: JobHealthRow | None, spec: JobSpec | None) -> JobHealthOut:
    return JobHealthOut(
        job=name,
        status=_status(row),
        description=spec.description if spec else "",
        interval_seconds=spec.interval_seconds if spec else None,
        batch_size=spec.batch_size if spec else None,
        owner=row.owner if row else None,
        last_outcome=row.last_outcome if row else None,
        last_started_at=row.last_started_at if row else None,
        last_finished_at=row.last_finished_at if row else None,
        last_succeeded_at=row.last_succeeded_at if row else None,
        last_failed_at=row.last_failed_at if row else None,
        last_error=row.last_error if row else None,
        last_items=row.last_items if row else 0,
        last_batches=row.last_batches if row else 0,
        last_duration_ms=row.last_duration_ms if row else None,
        total_runs=row.total_runs if row else 0,
        total_failures=row.total_failures if row else 0,
        total_items=row.total_items if row else 0,
        consecutive_failures=row.consecutive_failures if row else 0,
        retry_at=row.retry_at if row else None,
    )


def list_job_health(session: Session, jobs: Sequence[JobSpec] = ()) -> list[JobHealthOut]:
    """The health of every configured job (``jobs``, in their order, "never_run" until they do), then of any job
    the table knows that is no longer configured."""
    rows: dict[str, JobHealthRow] = {
        row.job: row for row in session.execute(select(job_health).order_by(job_health.c.job)).all()
    }
    configured = {spec.name: spec for spec in jobs}
    views = [_view(spec.name, rows.get(spec.name), spec) for spec in jobs]
    views += [_view(name, row, None) for name, row in rows.items() if name not in configured]
    return views


def get_job_health(session: Session, job: str, jobs: Sequence[JobSpec] = ()) -> JobHealthOut | None:
    row: JobHealthRow | None = session.execute(select(job_health).where(job_health.c.job == job)).first()
    spec = next((s for s in jobs if s.name == job), None)
    if row is None and spec is None:
        return None
    return _view(job, row, spec)
