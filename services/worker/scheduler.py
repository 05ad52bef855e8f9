"""The worker process: an APScheduler scheduler running every job on its interval.

Schedules are rebuilt from settings at every start, not kept in a persistent job store. Every job is an
idempotent, state-driven sweep: what is due is read from the ledger's own rows (lots past their expiry, holds past
their time to live), never from a schedule's bookkeeping, so the only thing a persistent store could remember is
*when* a run was due, and a run that is late or missed changes nothing but timing: the next run finds the same
work. So at start each job runs at once (all runs missed while the worker was down coalesce into that one) and
then every interval from settings; a job that says so (``run_at_start=False``: the daily reconciliation, which
would compete with the catching up after a restart) runs first one interval after the start. Nothing about
schedules lives in the database to migrate, to go stale when the settings change, or to be fought over by
replicas; changing an interval is a restart.

Overlapping runs of a job cannot happen: within a process APScheduler starts at most one instance of a job
(``max_instances=1``) and collapses a backlog of due runs into one (``coalesce=True``); across replicas on
PostgreSQL the runner's advisory lock lets one run at a time (services.worker.runner). On SQLite (one node), one
worker per database file: a second one refuses to start (an exclusive lock on a file beside the database, which the
operating system releases however the first one ends, SIGKILL included).

A failed run is tried again after the runner's exponential backoff (rather than at the next interval): the job's
next run time is moved to the retry time, and once a run succeeds the interval applies again.

Stopping: SIGTERM or SIGINT asks every job to stop after its running batch (which commits), then the scheduler
shuts down, waiting for them. A second signal exits at once, as SIGKILL would: nothing is lost either way, since a
batch that did not commit left nothing behind and the next run picks up what is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, timedelta
from types import FrameType
from typing import IO

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.errors import Conflict
from services.core.settings import Settings
from services.worker.health import JobRun
from services.worker.jobs import JobSpec
from services.worker.runner import JobRunner, default_owner, run_job_once

__all__ = ["Worker", "create_worker", "run_job_once"]

logger = logging.getLogger("creditrail.worker")

RunListener = Callable[[JobRun], None]


class WorkerAlreadyRunning(Conflict):
    code = "worker_already_running"


def _sqlite_worker_lock(engine: Engine) -> IO[str] | None:
    """On a SQLite file, the exclusive lock that makes this the file's only worker (None on PostgreSQL, where the
    advisory locks let replicas share the work, and for an in-memory database)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    handle = open(f"{database}.worker.lock", "a+")  # noqa: SIM115 - held for the worker's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise WorkerAlreadyRunning(
            f"another worker is running on {database}; on SQLite run one worker (use PostgreSQL for replicas)"
        ) from None
    return handle


class Worker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        jobs: Sequence[JobSpec],
        *,
        on_run: RunListener | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.jobs = list(jobs)
        self.owner = default_owner()
        self._stop = threading.Event()
        self._on_run = on_run
        self._runners = {
            spec.name: JobRunner(
                engine,
                spec,
                owner=self.owner,
                stop=self._stop,
                backoff_initial_seconds=settings.worker_backoff_initial_seconds,
                backoff_max_seconds=settings.worker_backoff_max_seconds,
            )
            for spec in self.jobs
        }
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(self.jobs)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._signals = 0
        self._file_lock: IO[str] | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Schedule every job (each runs at once, then every interval) and return; the jobs run in threads."""
        self._file_lock = _sqlite_worker_lock(self.engine)
        # What start-up built lives as long as the process: kept out of the collector's sight, so that full
        # collections (tens of milliseconds on a large heap) stay short while jobs run.
        gc.collect()
        gc.freeze()
        now = utcnow()
        for spec in self.jobs:
            first_run = now if spec.run_at_start else now + timedelta(seconds=spec.interval_seconds)
            self.scheduler.add_job(
                self._run,
                trigger=IntervalTrigger(seconds=spec.interval_seconds, timezone=UTC),
                args=[spec.name],
                id=spec.name,
                name=spec.name,
                next_run_time=first_run,
                replace_existing=True,
            )
        self.scheduler.start()
        schedule = {spec.name: {"interval_s": spec.interval_seconds, "batch": spec.batch_size} for spec in self.jobs}
        logger.info("worker_started", extra={"fields": {"owner": self.owner, "jobs": schedule}})

    def _run(self, name: str) -> None:
        runner = self._runners[name]
        run = runner.run()
        if run.retry_at is not None and not self._stop.is_set():
            with contextlib.suppress(JobLookupError):  # the worker is shutting down
                self.scheduler.modify_job(name, next_run_time=run.retry_at)
        if self._on_run is not None:
            self._on_run(run)

    def request_stop(self) -> None:
        """Ask the running jobs to stop after their current batch; returns at once."""
        self._stop.set()

    def shutdown(self, wait: bool = True) -> None:
        """Stop: running jobs finish their current batch; with ``wait``, return once they have."""
        self._stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
            logger.info("worker_stopped", extra={"fields": {"owner": self.owner}})
        if self._file_lock is not None:
            self._file_lock.close()
            self._file_lock = None

    def run_forever(self) -> None:
        """Start and block until SIGTERM or SIGINT, then stop gracefully (from the main thread only)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop.wait(1.0):
                pass
            self.shutdown(wait=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            # Asked twice: leave at once. Killing the worker at any instant loses nothing.
            os._exit(128 + signum)
        logger.info("worker_stopping", extra={"fields": {"owner": self.owner, "signal": signal.Signals(signum).name}})
        self._stop.set()


def create_worker(
    engine: Engine,
    settings: Settings,
    *,
    jobs: Sequence[JobSpec],
    on_run: RunListener | None = None,
) -> Worker:
    """The worker for ``engine``, running ``jobs`` (the commands that start it pass the jobs ``settings`` enable:
    services.app.jobs.enabled_jobs). ``on_run`` is called after every run, in the job's thread."""
    return Worker(engine, settings, jobs, on_run=on_run)
