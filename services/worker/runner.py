"""Running one job: its lock, its batches, its health record and its log line.

A run takes the job's lock, records its start, then calls the job's batch function in a loop, one database
transaction per call (``unit_of_work`` commits it), until a call processes fewer items than the batch size, the
worker is asked to stop (checked between batches, so a running batch always finishes and commits), or a batch
fails. The end is recorded and logged as one JSON line (job, outcome, items, batches, duration).

- The lock. On PostgreSQL a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own,
  held for the whole run and released at its end (or by the server when that connection dies): with several
  worker replicas, one runs the job and the others skip it. The key is derived from the database, the schema and
  the job's name. The connection is in autocommit mode, so holding the lock never holds a transaction open, and
  it is checked alive before every batch. On SQLite there is one worker; within a process a lock per job keeps
  a one-off run (``run_job_once``) from overlapping the scheduler's.
- Failures. Any exception ends the run as an error: what the committed batches did stays, the failed batch was
  rolled back, and the job's state in the database says what is left. The runner counts failures in a row and
  says when to try again: ``backoff_initial_seconds * 2 ** (failures - 1)``, at most ``backoff_max_seconds``.
  When the database is away the error cannot be written; it is kept and written first by the next run that can.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import get_settings
from services.worker.health import JobRun, record_finish, record_start
from services.worker.jobs import JobSpec
from services.worker.models import RunOutcome

logger = logging.getLogger("creditrail.worker")

LOG_ERROR_MAX_CHARS = 500
# Ends of runs kept while the database is away (at the longest backoff, hours of them); older ones are dropped.
UNRECORDED_MAX = 100

_LOCK_SQL = text(
    "SELECT key, pg_try_advisory_lock(key) AS acquired FROM (SELECT hashtextextended("
    "'creditrail.job:' || current_database() || ':' || current_schema() || ':' || :job, 0) AS key) AS k"
)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobLock:
    """A held advisory lock (PostgreSQL) on its own autocommit connection, or nothing to hold (SQLite)."""

    def __init__(self, connection: Connection | None = None, key: int | None = None) -> None:
        self.connection = connection
        self.key = key

    def check(self) -> None:
        """Raise when the connection holding the lock is gone (and with it the lock)."""
        if self.connection is not None:
            self.connection.execute(text("SELECT 1"))


@contextmanager
def job_lock(engine: Engine, job: str) -> Iterator[JobLock | None]:
    """The job's lock for the duration of the block, or None when another worker holds it."""
    if engine.dialect.name != "postgresql":
        yield JobLock()
        return
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        row = connection.execute(_LOCK_SQL, {"job": job}).one()
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    if not row.acquired:
        connection.close()
        yield None
        return
    try:
        yield JobLock(connection, int(row.key))
    finally:
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": row.key})
        except Exception:
            # A connection that may still hold the lock never goes back to the pool.
            connection.invalidate()
        connection.close()


_local_locks: weakref.WeakKeyDictionary[Engine, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()
_local_locks_guard = threading.Lock()


def _local_lock(engine: Engine, job: str) -> threading.Lock:
    with _local_locks_guard:
        return _local_locks.setdefault(engine, {}).setdefault(job, threading.Lock())


def describe_error(exc: BaseException) -> str:
    """``Type: message``; for database errors the driver's message, without the statement and its parameters."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(source).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class JobRunner:
    """Runs one job, again and again, keeping what must outlive a run: failures in a row and an end not yet
    recorded. The worker keeps one per job; ``run_job_once`` makes a fresh one."""

    def __init__(
        self,
        engine: Engine,
        spec: JobSpec,
        *,
        owner: str | None = None,
        stop: threading.Event | None = None,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 300.0,
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.owner = owner or default_owner()
        self.stop = stop or threading.Event()
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.consecutive_failures = 0
        # Ends of runs the database was away for, oldest first; written first by the next run that can.
        self._unrecorded: deque[JobRun] = deque(maxlen=UNRECORDED_MAX)

    def backoff_seconds(self, failures: int) -> float:
        """The delay before the next attempt after ``failures`` failed runs in a row."""
        if failures <= 0:
            return 0.0
        return float(min(self.backoff_initial_seconds * 2 ** min(failures - 1, 62), self.backoff_max_seconds))

    def run(self, now: datetime | None = None) -> JobRun:
        """One run. ``now``: the time every batch sees (default: the clock, read again for each batch)."""
        t0 = time.monotonic()
        local = _local_lock(self.engine, self.spec.name)
        if not local.acquire(blocking=False):
            return self._finish(self._run_of(utcnow(), t0, RunOutcome.SKIPPED, 0, 0), record=False)
        try:
            with job_lock(self.engine, self.spec.name) as lock:
                if lock is None:
                    return self._finish(self._run_of(utcnow(), t0, RunOutcome.SKIPPED, 0, 0), record=False)
                # Recorded before the lock is released, so the record of one run never lands after the next.
                swept, failure = self._sweep(lock, now, t0)
                return self._finish(swept, failure=failure)
        except Exception as exc:  # the lock could not be taken: the database is away
            failed = self._run_of(utcnow(), t0, RunOutcome.ERROR, 0, 0, describe_error(exc))
            return self._finish(failed, failure=exc)
        finally:
            local.release()

    def _sweep(self, lock: JobLock, now: datetime | None, t0: float) -> tuple[JobRun, Exception | None]:
        """The batches, while holding the job's lock; the run's times lie within the time the lock was held."""
        started_at = utcnow()
        items = batches = 0
        try:
            self._record_unrecorded()
            with unit_of_work(self.engine) as session:
                record_start(session, job=self.spec.name, owner=self.owner, started_at=started_at)
            while True:
                if self.stop.is_set():
                    return self._run_of(started_at, t0, RunOutcome.STOPPED, items, batches), None
                lock.check()
                if self.spec.step is not None:
                    done = self.spec.step(self.engine, now or utcnow(), self.spec.batch_size)
                else:
                    assert self.spec.batch is not None
                    with unit_of_work(self.engine) as session:
                        done = self.spec.batch(session, now or utcnow(), self.spec.batch_size)
                items += done
                batches += 1
                if done < self.spec.batch_size:
                    return self._run_of(started_at, t0, RunOutcome.SUCCESS, items, batches), None
        except Exception as exc:
            return self._run_of(started_at, t0, RunOutcome.ERROR, items, batches, describe_error(exc)), exc

    def _record_unrecorded(self) -> None:
        if self._unrecorded:
            with unit_of_work(self.engine) as session:
                for run in self._unrecorded:
                    record_finish(session, run)
            self._unrecorded.clear()

    def _run_of(
        self,
        started_at: datetime,
        t0: float,
        outcome: RunOutcome,
        items: int,
        batches: int,
        error: str | None = None,
    ) -> JobRun:
        return JobRun(
            job=self.spec.name,
            outcome=outcome,
            owner=self.owner,
            started_at=started_at,
            finished_at=utcnow(),
            duration_ms=round((time.monotonic() - t0) * 1000),
            items=items,
            batches=batches,
            error=error,
        )

    def _finish(self, run: JobRun, *, record: bool = True, failure: BaseException | None = None) -> JobRun:
        """Count the failure (and when to try again), record the end of the run, and log it."""
        if run.outcome == RunOutcome.ERROR:
            self.consecutive_failures += 1
            delay = timedelta(seconds=self.backoff_seconds(self.consecutive_failures))
            run = replace(run, consecutive_failures=self.consecutive_failures, retry_at=run.finished_at + delay)
        elif run.outcome != RunOutcome.SKIPPED:
            self.consecutive_failures = 0
        recorded = False
        if record:
            try:
                with unit_of_work(self.engine) as session:
                    record_finish(session, run)
                recorded = True
            except Exception as exc:
                self._unrecorded.append(run)
                logger.debug("could not record the end of a run: %s", describe_error(exc))
        self._log(run, recorded, failure)
        return run

    def _log(self, run: JobRun, recorded: bool, failure: BaseException | None) -> None:
        fields: dict[str, Any] = {
            "job": run.job,
            "outcome": str(run.outcome),
            "items": run.items,
            "batches": run.batches,
            "duration_ms": run.duration_ms,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat(),
            "owner": run.owner,
        }
        if run.outcome == RunOutcome.ERROR:
            fields |= {
                "error": (run.error or "")[:LOG_ERROR_MAX_CHARS],
                "consecutive_failures": run.consecutive_failures,
                "retry_at": run.retry_at.isoformat() if run.retry_at else None,
                "recorded": recorded,
            }
            # A database error says what it is; anything else is a bug, and its traceback goes with it.
            exc_info = None if isinstance(failure, DBAPIError) or failure is None else failure
            logger.warning("job_run", extra={"fields": fields}, exc_info=exc_info)
        else:
            logger.info("job_run", extra={"fields": fields})


def run_job_once(
    engine: Engine,
    spec: JobSpec,
    now: datetime | None = None,
    *,
    stop: threading.Event | None = None,
    owner: str | None = None,
) -> JobRun:
    """One run of ``spec`` (for tests and the command line): the same lock, batches, record and log line as the
    worker's runs."""
    settings = get_settings()
    runner = JobRunner(
        engine,
        spec,
        owner=owner,
        stop=stop,
        backoff_initial_seconds=settings.worker_backoff_initial_seconds,
        backoff_max_seconds=settings.worker_backoff_max_seconds,
    )
    return runner.run(now)
