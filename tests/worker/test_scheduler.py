"""The scheduler in a process: every job at start then every interval, never two runs of a job at once, and a
shutdown that waits for the running batch."""

from __future__ import annotations

import itertools
import queue
import threading
from datetime import datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.app.jobs import default_jobs, enabled_jobs
from services.core.settings import Settings
from services.ledger.tasks import expire_lots_batch
from services.worker.health import JobRun
from services.worker.jobs import JobSpec
from services.worker.models import RunOutcome
from services.worker.scheduler import create_worker
from tests.worker.support import expiry_movements, seed_lots

SETTINGS = Settings(environment="test")


def test_default_worker_schedules_the_ledger_jobs_from_settings(engine: Engine) -> None:
    settings = Settings(
        environment="test",
        worker_lot_expiry_interval_seconds=42,
        worker_hold_expiry_interval_seconds=7,
        worker_jobs=["ledger.expire_lots", "ledger.expire_holds"],
    )
    worker = create_worker(engine, settings, jobs=enabled_jobs(settings))
    worker.start()
    try:
        jobs = {job.id: job for job in worker.scheduler.get_jobs()}
        assert set(jobs) == {"ledger.expire_lots", "ledger.expire_holds"}
        assert jobs["ledger.expire_lots"].trigger.interval.total_seconds() == 42
        assert jobs["ledger.expire_holds"].trigger.interval.total_seconds() == 7
        assert all((job.max_instances, job.coalesce) == (1, True) for job in jobs.values())
    finally:
        worker.shutdown()
    assert not worker.scheduler.running


def test_every_job_runs_at_start_then_every_interval(engine: Engine) -> None:
    seeded = seed_lots(engine, accounts=2, lots_per_account=5)
    runs: queue.Queue[JobRun] = queue.Queue()
    ticks = itertools.count()

    def tick(session: Session, now: datetime, batch_size: int) -> int:
        next(ticks)
        return 0

    lot_job = next(spec for spec in default_jobs(SETTINGS) if spec.name == "ledger.expire_lots")
    jobs = [lot_job, JobSpec("test.tick", tick, interval_seconds=0.1, batch_size=1)]
    worker = create_worker(engine, SETTINGS, jobs=jobs, on_run=runs.put)
    worker.start()
    try:
        seen: list[JobRun] = []
        while sum(r.job == "test.tick" for r in seen) < 4 or not any(r.job == lot_job.name for r in seen):
            seen.append(runs.get(timeout=30))
    finally:
        worker.shutdown()

    # The lot job ran at start (its interval is a minute) and did the due work.
    [lot_run] = [r for r in seen if r.job == lot_job.name]
    assert (lot_run.outcome, lot_run.items) == (RunOutcome.SUCCESS, len(seeded.lot_ids))
    assert expiry_movements(engine) == len(seeded.lot_ids)
    tick_runs = [r for r in seen if r.job == "test.tick"]
    assert all(r.outcome == RunOutcome.SUCCESS for r in tick_runs)
    for before, after in itertools.pairwise(tick_runs):
        assert before.finished_at <= after.started_at


def test_a_job_still_running_when_it_is_due_again_is_not_started_twice(engine: Engine) -> None:
    entered, release, skipped = threading.Event(), threading.Event(), threading.Event()
    active = 0
    most_active = 0
    guard = threading.Lock()
    runs: queue.Queue[JobRun] = queue.Queue()

    def slow(session: Session, now: datetime, batch_size: int) -> int:
        nonlocal active, most_active
        with guard:
            active += 1
            most_active = max(most_active, active)
        entered.set()
        assert release.wait(30)
        with guard:
            active -= 1
        return 0

    def on_skip(event: JobSubmissionEvent) -> None:
        skipped.set()

    worker = create_worker(
        engine, SETTINGS, jobs=[JobSpec("test.slow", slow, interval_seconds=0.05, batch_size=1)], on_run=runs.put
    )
    worker.scheduler.add_listener(on_skip, EVENT_JOB_MAX_INSTANCES)
    worker.start()
    try:
        assert entered.wait(30)
        # Due again (many times) while running: APScheduler refuses to start a second instance.
        assert skipped.wait(30)
        release.set()
        first = runs.get(timeout=30)
        second = runs.get(timeout=30)
    finally:
        release.set()
        worker.shutdown()
    assert most_active == 1
    assert (first.outcome, second.outcome) == (RunOutcome.SUCCESS, RunOutcome.SUCCESS)
    assert first.finished_at <= second.started_at


def test_shutdown_waits_for_the_running_batch_to_commit_then_stops_the_run(engine: Engine) -> None:
    seed_lots(engine, accounts=4, lots_per_account=25)
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def batch(session: Session, now: datetime, batch_size: int) -> int:
        done = expire_lots_batch(session, now, batch_size)
        entered.set()
        assert release.wait(30)
        order.append("batch")
        return done

    spec = JobSpec("ledger.expire_lots", batch, interval_seconds=60, batch_size=10)
    runs: list[JobRun] = []

    def on_run(run: JobRun) -> None:
        runs.append(run)
        order.append("run")

    def stop() -> None:
        worker.shutdown(wait=True)
        order.append("shutdown")

    worker = create_worker(engine, SETTINGS, jobs=[spec], on_run=on_run)
    worker.start()
    assert entered.wait(30)
    stopper = threading.Thread(target=stop)
    stopper.start()
    try:
        release.set()
    finally:
        stopper.join(30)
    assert not stopper.is_alive()
    assert order == ["batch", "run", "shutdown"]
    [run] = runs
    assert (run.outcome, run.batches, run.items) == (RunOutcome.STOPPED, 1, 10)
    assert expiry_movements(engine) == 10
