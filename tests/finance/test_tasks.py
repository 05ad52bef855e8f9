"""The daily reconciliation job: there when a rail is on, it reconciles the last whole days of each rail, and
running it again changes nothing; a rail that fails is recorded and raised after the others ran."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.core.db import unit_of_work
from services.core.settings import Settings
from services.finance.flows.reconcile import previous_days
from services.finance.runs import list_runs
from services.finance.tasks import ReconciliationJobFailed, finance_job_specs, reconcile_recent_days
from services.worker.health import JobRun
from services.worker.jobs import JobSpec
from services.worker.scheduler import create_worker
from tests.card.conftest import Card


def test_previous_days_are_whole_utc_days_oldest_first() -> None:
    now = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    assert previous_days(now, 2) == [
        (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)),
        (datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)),
    ]


def test_no_job_when_no_rail_is_on(engine: Engine) -> None:
    assert finance_job_specs(Settings(database_url=str(engine.url), environment="test")) == []


def test_the_job_reconciles_the_last_days_once(card: Card) -> None:
    (spec,) = finance_job_specs(card.settings)
    assert spec.name == "finance.reconcile"
    assert spec.interval_seconds == card.settings.finance_reconcile_interval_seconds
    customer = card.customer()
    card.complete(card.bought(customer))
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert reconcile_recent_days(card.engine, card.settings, tomorrow, gateway=card.gateway) == 2
    assert reconcile_recent_days(card.engine, card.settings, tomorrow, gateway=card.gateway) == 2
    with unit_of_work(card.engine) as s:
        runs = list_runs(s, rail="card")
    assert len(runs) == 2
    assert sum(run.matched for run in runs) == 1
    assert all(run.status == "complete" and run.discrepancies == 0 for run in runs)
    assert sorted(run.attempts for run in runs) == [2, 2]


def test_a_failing_rail_is_recorded_and_raised(card: Card) -> None:
    card.stripe.fail("GET", "/v1/balance_transactions", "500", times=100)
    with pytest.raises(ReconciliationJobFailed, match="card"):
        reconcile_recent_days(card.engine, card.settings, datetime.now(UTC), gateway=card.gateway)
    with unit_of_work(card.engine) as s:
        assert {run.status for run in list_runs(s, rail="card")} == {"failed"}


def test_a_freshly_started_worker_runs_the_reconciliation_one_interval_later_not_at_start(card: Card) -> None:
    runs: queue.Queue[JobRun] = queue.Queue()
    (reconcile,) = finance_job_specs(card.settings)
    ticked = threading.Event()

    def tick(session: Session, now: datetime, batch_size: int) -> int:
        ticked.set()
        return 0

    jobs = [reconcile, JobSpec("test.tick", tick, interval_seconds=3_600, batch_size=1)]
    before = datetime.now(UTC)
    worker = create_worker(card.engine, card.settings, jobs=jobs, on_run=runs.put)
    worker.start()
    try:
        assert ticked.wait(10), "the jobs that run at start have run"
        scheduled = worker.scheduler.get_job("finance.reconcile").next_run_time
    finally:
        worker.shutdown()
    assert [run.job for run in _drain(runs)] == ["test.tick"]
    interval = timedelta(seconds=card.settings.finance_reconcile_interval_seconds)
    assert before + interval <= scheduled <= datetime.now(UTC) + interval
    with unit_of_work(card.engine) as s:
        assert list_runs(s) == []


def _drain(runs: queue.Queue[JobRun]) -> list[JobRun]:
    done = []
    while not runs.empty():
        done.append(runs.get_nowait())
    return done
