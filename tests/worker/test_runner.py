"""One run of a job: batches until the work is done, one transaction each, recorded and logged."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.tasks import expire_lots_batch, lot_expiry_job
from services.worker.health import get_job_health
from services.worker.jobs import JobSpec
from services.worker.logs import JsonFormatter
from services.worker.models import RunOutcome
from services.worker.runner import JobRunner, job_lock, run_job_once
from tests.worker.support import assert_expired_exactly_once, due_lots, expiry_movements, seed_lots

SETTINGS = Settings(environment="test", worker_lot_expiry_batch_size=50)


def lot_job(batch_size: int = 50) -> JobSpec:
    return replace(lot_expiry_job(SETTINGS), batch_size=batch_size)


def health(engine: Engine, job: str):
    with unit_of_work(engine) as session:
        return get_job_health(session, job)


def test_run_expires_every_due_lot_in_batches_and_records_it(engine: Engine) -> None:
    seeded = seed_lots(engine, accounts=7, lots_per_account=30)

    run = run_job_once(engine, lot_job(50))

    assert (run.outcome, run.items, run.batches) == (RunOutcome.SUCCESS, 210, 5)
    assert_expired_exactly_once(engine, seeded)
    view = health(engine, "ledger.expire_lots")
    assert view is not None
    assert view.status == "ok"
    assert view.last_outcome == RunOutcome.SUCCESS
    assert (view.last_items, view.last_batches, view.total_items, view.total_runs) == (210, 5, 210, 1)
    assert view.last_started_at == run.started_at
    assert view.last_succeeded_at == run.finished_at
    assert view.last_error is None
    assert view.consecutive_failures == 0


def test_a_second_run_finds_nothing_left_to_do(engine: Engine) -> None:
    seeded = seed_lots(engine, accounts=3, lots_per_account=10)
    first = run_job_once(engine, lot_job(7))
    second = run_job_once(engine, lot_job(7))

    assert (first.items, second.items, second.batches) == (30, 0, 1)
    assert_expired_exactly_once(engine, seeded)
    view = health(engine, "ledger.expire_lots")
    assert view is not None
    assert (view.total_runs, view.total_items, view.last_items) == (2, 30, 0)


def test_lots_not_yet_due_are_left_alone(engine: Engine) -> None:
    seed_lots(engine, accounts=2, lots_per_account=5)

    run = run_job_once(engine, lot_job(), now=datetime.now(UTC) - timedelta(days=400))

    assert (run.outcome, run.items) == (RunOutcome.SUCCESS, 0)
    assert expiry_movements(engine) == 0
    assert due_lots(engine) == 10


def test_a_stop_request_lets_the_running_batch_commit_and_ends_the_run(engine: Engine) -> None:
    seed_lots(engine, accounts=4, lots_per_account=25)
    stop = threading.Event()
    calls = 0

    def batch(session: Session, now: datetime, batch_size: int) -> int:
        nonlocal calls
        calls += 1
        done = expire_lots_batch(session, now, batch_size)
        if calls == 2:
            stop.set()  # asked to stop while the second batch is still open
        return done

    run = run_job_once(engine, replace(lot_job(10), batch=batch), stop=stop)

    assert (run.outcome, run.batches, run.items) == (RunOutcome.STOPPED, 2, 20)
    assert expiry_movements(engine) == 20  # the batch running at the stop request was committed
    view = health(engine, "ledger.expire_lots")
    assert view is not None
    assert (view.status, view.last_items, view.total_items) == ("stopped", 20, 20)

    rest = run_job_once(engine, lot_job(10))
    assert (rest.outcome, rest.items) == (RunOutcome.SUCCESS, 80)


def test_a_failing_batch_rolls_back_alone_and_the_error_is_recorded(engine: Engine) -> None:
    seeded = seed_lots(engine, accounts=5, lots_per_account=10)
    calls = 0

    def batch(session: Session, now: datetime, batch_size: int) -> int:
        nonlocal calls
        calls += 1
        done = expire_lots_batch(session, now, batch_size)
        if calls == 3:
            raise RuntimeError("boom in batch 3")
        return done

    run = run_job_once(engine, replace(lot_job(10), batch=batch))

    assert (run.outcome, run.items, run.batches) == (RunOutcome.ERROR, 20, 2)
    assert run.error == "RuntimeError: boom in batch 3"
    assert expiry_movements(engine) == 20  # batches 1 and 2 committed, batch 3 rolled back
    view = health(engine, "ledger.expire_lots")
    assert view is not None
    assert (view.status, view.last_outcome, view.last_error) == ("failing", "error", "RuntimeError: boom in batch 3")
    assert view.last_failed_at == run.finished_at
    assert view.last_succeeded_at is None
    assert (view.consecutive_failures, view.total_failures, view.total_items) == (1, 1, 20)
    assert view.retry_at == run.retry_at

    fixed = run_job_once(engine, lot_job(10))
    assert (fixed.outcome, fixed.items) == (RunOutcome.SUCCESS, 30)
    assert_expired_exactly_once(engine, seeded)
    view = health(engine, "ledger.expire_lots")
    assert view is not None
    assert (view.status, view.consecutive_failures, view.total_failures, view.total_runs) == ("ok", 0, 1, 2)
    # The last error stays visible, with its time, after the job recovered.
    assert view.last_error == "RuntimeError: boom in batch 3"
    assert view.last_succeeded_at == fixed.finished_at


def test_failures_in_a_row_back_off_exponentially_up_to_the_cap(engine: Engine) -> None:
    def broken(session: Session, now: datetime, batch_size: int) -> int:
        raise ConnectionError("nobody home")

    spec = JobSpec("test.broken", broken, interval_seconds=60, batch_size=10)
    runner = JobRunner(engine, spec, backoff_initial_seconds=2, backoff_max_seconds=20)

    delays = []
    for _ in range(6):
        run = runner.run()
        assert run.outcome == RunOutcome.ERROR
        assert run.retry_at is not None
        delays.append((run.retry_at - run.finished_at).total_seconds())

    assert delays == [2, 4, 8, 16, 20, 20]
    view = health(engine, "test.broken")
    assert view is not None
    assert (view.consecutive_failures, view.total_failures) == (6, 6)

    runner.spec = JobSpec("test.broken", lambda s, n, b: 0, interval_seconds=60, batch_size=10)
    run = runner.run()
    assert (run.outcome, run.retry_at, runner.consecutive_failures) == (RunOutcome.SUCCESS, None, 0)


def test_each_run_logs_one_json_line(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    seed_lots(engine, accounts=2, lots_per_account=3)
    with caplog.at_level(logging.INFO, logger="creditrail.worker"):
        run_job_once(engine, lot_job(4))

    records = [r for r in caplog.records if r.name == "creditrail.worker" and r.getMessage() == "job_run"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["event"] == "job_run"
    assert line["level"] == "info"
    assert (line["job"], line["outcome"], line["items"], line["batches"]) == ("ledger.expire_lots", "success", 6, 2)
    assert isinstance(line["duration_ms"], int)
    assert line["owner"]


def test_a_run_already_going_in_this_process_is_not_overlapped(engine: Engine) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(session: Session, now: datetime, batch_size: int) -> int:
        entered.set()
        assert release.wait(30)
        return 0

    spec = JobSpec("test.slow", slow, interval_seconds=60, batch_size=10)
    first: list[object] = []
    thread = threading.Thread(target=lambda: first.append(run_job_once(engine, spec)))
    thread.start()
    try:
        assert entered.wait(30)
        second = run_job_once(engine, spec)
    finally:
        release.set()
        thread.join(30)
    assert second.outcome == RunOutcome.SKIPPED
    assert second.batches == 0
    assert [getattr(run, "outcome", None) for run in first] == [RunOutcome.SUCCESS]


@pytest.mark.postgresql_only
def test_another_worker_holding_the_advisory_lock_makes_the_run_skip(pg_engine: Engine) -> None:
    seed_lots(pg_engine, accounts=2, lots_per_account=5)
    spec = lot_job()
    with job_lock(pg_engine, spec.name) as held:  # another replica, on a connection of its own
        assert held is not None
        run = run_job_once(pg_engine, spec)
        assert (run.outcome, run.items) == (RunOutcome.SKIPPED, 0)
        assert expiry_movements(pg_engine) == 0
        assert health(pg_engine, spec.name) is None  # a skipped run writes nothing
        # Other jobs have locks of their own.
        with job_lock(pg_engine, "ledger.expire_holds") as other:
            assert other is not None
    run = run_job_once(pg_engine, spec)
    assert (run.outcome, run.items) == (RunOutcome.SUCCESS, 10)


@pytest.mark.postgresql_only
def test_the_lock_is_held_outside_any_transaction_and_released_after_the_run(pg_engine: Engine) -> None:
    holders: list[tuple[str | None, object]] = []
    # A bigint advisory key shows in pg_locks as classid (high 32 bits), objid (low 32 bits), objsubid 1.
    probe_sql = text(
        "SELECT a.state, a.xact_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid, "
        "(SELECT hashtextextended('creditrail.job:' || current_database() || ':' || current_schema() "
        "|| ':' || :job, 0) AS k) AS key "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295 "
        "AND l.objsubid = 1"
    )

    def look(session: Session, now: datetime, batch_size: int) -> int:
        with pg_engine.connect() as probe:
            holders.extend((r.state, r.xact_start) for r in probe.execute(probe_sql, {"job": "test.look"}))
        return 0

    run = run_job_once(pg_engine, JobSpec("test.look", look, interval_seconds=60, batch_size=1))

    assert run.outcome == RunOutcome.SUCCESS
    # While the batch ran, one connection held the lock, idle outside any transaction.
    assert holders == [("idle", None)]
    with pg_engine.connect() as probe:
        assert probe.execute(probe_sql, {"job": "test.look"}).all() == []
