"""The database goes away during a run: the error is recorded when it can be, the job backs off, and a later run
succeeds once the database is back, with nothing lost and nothing done twice."""

from __future__ import annotations

import itertools
import queue
from dataclasses import replace
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from services.core.db import make_engine, unit_of_work
from services.core.settings import Settings
from services.ledger.tasks import expire_lots_batch, lot_expiry_job
from services.worker.health import JobRun, get_job_health
from services.worker.jobs import JobSpec
from services.worker.models import RunOutcome
from services.worker.runner import JobRunner, run_job_once
from services.worker.scheduler import create_worker
from tests.conftest import PostgresTestDatabase
from tests.worker.proxy import TcpProxy
from tests.worker.support import assert_expired_exactly_once, expiry_movements, seed_lots

pytestmark = pytest.mark.postgresql_only

JOB = "ledger.expire_lots"


def proxied_engine(database: PostgresTestDatabase, proxy: TcpProxy) -> Engine:
    url = make_url(database.url).set(host="127.0.0.1", port=proxy.port)
    return make_engine(url, schema=database.schema, pool_size=4)


def health(engine: Engine):
    with unit_of_work(engine) as session:
        return get_job_health(session, JOB)


@pytest.fixture
def database(pg_engine: Engine, postgres_database: PostgresTestDatabase) -> PostgresTestDatabase:
    return postgres_database


def test_connection_refused_is_an_error_run_not_a_crash(database: PostgresTestDatabase) -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    try:
        run = run_job_once(engine, lot_expiry_job(Settings(environment="test")))
    finally:
        engine.dispose()
    assert (run.outcome, run.items, run.batches) == (RunOutcome.ERROR, 0, 0)
    assert run.error is not None
    assert run.error.startswith("OperationalError: ")
    assert "refused" in run.error.lower()
    assert run.retry_at is not None


def test_errors_while_the_database_is_away_are_recorded_once_it_is_back(
    database: PostgresTestDatabase, pg_engine: Engine
) -> None:
    seeded = seed_lots(pg_engine, accounts=3, lots_per_account=10)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        engine = proxied_engine(database, proxy)
        runner = JobRunner(engine, replace(lot_expiry_job(Settings()), batch_size=10), backoff_initial_seconds=1)
        proxy.cut()
        failed = [runner.run(), runner.run()]
        assert [r.outcome for r in failed] == [RunOutcome.ERROR, RunOutcome.ERROR]
        assert health(pg_engine) is None  # nothing could be written
        proxy.restore()
        recovered = runner.run()
        engine.dispose()

    assert (recovered.outcome, recovered.items) == (RunOutcome.SUCCESS, 30)
    assert_expired_exactly_once(pg_engine, seeded)
    view = health(pg_engine)
    assert view is not None
    assert view.last_error is not None
    assert "refused" in view.last_error.lower()
    assert view.last_failed_at == failed[-1].finished_at
    assert view.last_succeeded_at == recovered.finished_at
    assert (view.total_runs, view.total_failures, view.consecutive_failures, view.total_items) == (3, 2, 0, 30)


def test_a_connection_dropped_mid_run_backs_off_and_a_later_run_finishes_the_work(
    database: PostgresTestDatabase, pg_engine: Engine
) -> None:
    seeded = seed_lots(pg_engine, accounts=6, lots_per_account=10)
    runs: queue.Queue[JobRun] = queue.Queue()
    settings = Settings(environment="test", worker_backoff_initial_seconds=0.2, worker_backoff_max_seconds=0.8)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        engine = proxied_engine(database, proxy)
        calls = 0

        def batch(session: Session, now: datetime, batch_size: int) -> int:
            nonlocal calls
            calls += 1
            done = expire_lots_batch(session, now, batch_size)
            if calls == 3:
                proxy.cut()  # the database goes away with the third batch still open
            return done

        spec = JobSpec(JOB, batch, interval_seconds=3600, batch_size=10)
        worker = create_worker(engine, settings, jobs=[spec], on_run=runs.put)
        worker.start()
        try:
            seen = [runs.get(timeout=30)]
            assert seen[0].outcome == RunOutcome.ERROR
            # Two batches committed before the drop, the third was lost with its connection.
            assert (seen[0].items, seen[0].batches) == (20, 2)
            assert expiry_movements(pg_engine) == 20
            while len(seen) < 5:
                seen.append(runs.get(timeout=30))
            assert all(r.outcome == RunOutcome.ERROR for r in seen)
            proxy.restore()
            while seen[-1].outcome != RunOutcome.SUCCESS:
                seen.append(runs.get(timeout=30))
        finally:
            worker.shutdown(wait=True)
            engine.dispose()

    errors = [r for r in seen if r.outcome == RunOutcome.ERROR]
    delays = [(r.retry_at - r.finished_at).total_seconds() for r in errors if r.retry_at]
    assert delays[:5] == [0.2, 0.4, 0.8, 0.8, 0.8]
    # The retries waited (at least) their backoff, rather than the hour-long interval.
    for before, after in itertools.pairwise(seen):
        assert before.retry_at is not None
        assert after.started_at >= before.retry_at
    success = seen[-1]
    assert success.items == 40
    assert_expired_exactly_once(pg_engine, seeded)
    view = health(pg_engine)
    assert view is not None
    assert view.last_error is not None
    assert view.last_failed_at == errors[-1].finished_at
    assert view.last_succeeded_at == success.finished_at
    assert view.total_failures == len(errors)
    assert (view.consecutive_failures, view.total_items, view.status) == (0, 60, "ok")


def test_a_backend_terminated_mid_batch_is_recorded_and_the_next_run_resumes(pg_engine: Engine) -> None:
    seeded = seed_lots(pg_engine, accounts=4, lots_per_account=10)
    calls = 0

    def batch(session: Session, now: datetime, batch_size: int) -> int:
        nonlocal calls
        calls += 1
        done = expire_lots_batch(session, now, batch_size)
        if calls == 2:
            pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with pg_engine.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return done

    failed = run_job_once(pg_engine, JobSpec(JOB, batch, interval_seconds=60, batch_size=10))
    assert (failed.outcome, failed.items) == (RunOutcome.ERROR, 10)
    view = health(pg_engine)
    assert view is not None
    assert view.last_error is not None
    assert (view.status, view.last_failed_at) == ("failing", failed.finished_at)

    resumed = run_job_once(pg_engine, lot_expiry_job(Settings(worker_lot_expiry_batch_size=10)))
    assert (resumed.outcome, resumed.items) == (RunOutcome.SUCCESS, 30)
    assert_expired_exactly_once(pg_engine, seeded)
