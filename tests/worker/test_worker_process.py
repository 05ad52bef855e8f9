"""The worker as a real process, killed or stopped while it works, and two of them against one database.

"While it works" is read from the database, never guessed from time: the test polls until some batches have
committed and the worker is inside a transaction (PostgreSQL: its connection in pg_stat_activity has a transaction
open; SQLite: the write lock is taken), then signals it.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from services.core.db import unit_of_work
from services.ledger.invariants import check_invariants
from services.worker.health import get_job_health
from tests.worker.support import (
    WorkerProcess,
    assert_expired_exactly_once,
    due_lots,
    expiry_movements,
    scalar,
    seed_lots,
    unparsed,
    wait_for,
    worker_env,
)

JOB = "ledger.expire_lots"
ACCOUNTS = 200
LOTS_PER_ACCOUNT = 100  # 20,000 due lots


def in_write_transaction(engine: Engine, database_url: str) -> bool:
    """Whether the worker is inside a transaction right now."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        probe = sqlite3.connect(url.database or "", timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:  # database is locked: a writer holds it
            return True
        finally:
            probe.close()
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
                "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
            ),
            {"app": url.query["application_name"]},
        ).scalar_one()
    return bool(found)


def working(engine: Engine, database_url: str, total: int) -> bool:
    """Some batches committed, more to come, and a batch open now."""
    done = expiry_movements(engine)
    return 0 < done < total and in_write_transaction(engine, database_url)


def health(engine: Engine):
    with unit_of_work(engine) as session:
        return get_job_health(session, JOB)


def test_sigkill_in_the_middle_of_a_batch_then_restart_expires_every_lot_exactly_once(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    batch = 1_000
    seeded = seed_lots(engine, accounts=ACCOUNTS, lots_per_account=LOTS_PER_ACCOUNT)
    total = len(seeded.lot_ids)
    first = WorkerProcess(database_url, worker_env(lot_batch=batch)).start(tmp_path / "first.log")
    try:
        wait_for(lambda: working(engine, database_url, total), timeout=60, interval=0.005, what="a batch in flight")
        first.signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        first.kill()

    committed = expiry_movements(engine)
    assert 0 < committed < total
    assert committed % batch == 0  # whole batches only: the one killed mid-way left nothing behind
    view = health(engine)
    assert view is not None
    assert view.last_outcome == "running"
    with unit_of_work(engine) as session:
        assert check_invariants(session) == []

    second = WorkerProcess(database_url, worker_env(lot_batch=batch)).start(tmp_path / "second.log")
    try:
        wait_for(lambda: due_lots(engine) == 0, timeout=90, what="the restarted worker to finish")
        wait_for(lambda: any(r["items"] > 0 for r in second.runs(JOB)), timeout=30, what="its run's log line")
        assert second.stop() == 0
    finally:
        second.kill()

    assert_expired_exactly_once(engine, seeded)
    assert sum(r["items"] for r in second.runs(JOB)) == total - committed
    view = health(engine)
    assert view is not None
    assert view.last_succeeded_at is not None
    assert view.consecutive_failures == 0
    assert unparsed(second.log_lines()) == []


def test_sigterm_lets_the_running_batch_commit_then_the_worker_exits(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    batch = 250
    seeded = seed_lots(engine, accounts=ACCOUNTS, lots_per_account=LOTS_PER_ACCOUNT)
    total = len(seeded.lot_ids)
    worker = WorkerProcess(database_url, worker_env(lot_batch=batch)).start(tmp_path / "worker.log")
    try:
        wait_for(lambda: working(engine, database_url, total), timeout=60, interval=0.005, what="a batch in flight")
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        worker.kill()

    runs = [r for r in worker.runs(JOB) if r["outcome"] != "skipped"]
    assert [r["outcome"] for r in runs] == ["stopped"]
    stopped = runs[0]
    committed = expiry_movements(engine)
    # The batch open at the signal finished and committed, and the run counted exactly what was committed.
    assert stopped["items"] == committed
    assert stopped["batches"] * batch == committed
    assert 0 < committed < total
    view = health(engine)
    assert view is not None
    assert (view.status, view.last_items, view.total_items) == ("stopped", committed, committed)
    events = [line["event"] for line in worker.log_lines()]
    assert events.count("worker_stopping") == 1
    assert events[-1] == "worker_stopped"
    with unit_of_work(engine) as session:
        assert check_invariants(session) == []
    assert scalar(engine, "SELECT count(*) FROM lots WHERE expired_credits > 0") == committed


@pytest.mark.postgresql_only
def test_two_workers_on_one_postgresql_database_do_each_job_once(
    pg_engine: Engine, pg_database_url: str, tmp_path: Path
) -> None:
    batch = 200
    seeded = seed_lots(pg_engine, accounts=ACCOUNTS, lots_per_account=LOTS_PER_ACCOUNT)
    total = len(seeded.lot_ids)
    workers = [
        WorkerProcess(pg_database_url, worker_env(lot_batch=batch, interval=0.1)).start(tmp_path / f"w{n}.log")
        for n in range(2)
    ]
    try:
        wait_for(lambda: due_lots(pg_engine) == 0, timeout=120, what="the lots to expire")
        wait_for(
            lambda: (
                all(any(r["outcome"] == "success" for r in w.runs(JOB)) for w in workers)
                or any(any(r["outcome"] == "skipped" for r in w.runs(JOB)) for w in workers)
            ),
            timeout=30,
            what="both workers to have tried the job",
        )
        assert [w.stop() for w in workers] == [0, 0]
    finally:
        for w in workers:
            w.kill()

    assert_expired_exactly_once(pg_engine, seeded)
    assert expiry_movements(pg_engine) == total
    # One expiry transaction per batch, one movement per lot in it; never two for the same lot.
    assert (
        scalar(
            pg_engine,
            "SELECT count(*) FROM (SELECT m.transaction_id FROM lot_movements m WHERE m.kind = 'expiry' "
            "GROUP BY m.transaction_id HAVING count(DISTINCT m.lot_id) <> count(*)) AS dupes",
        )
        == 0
    )

    runs = [dict(r, worker=n) for n, w in enumerate(workers) for r in w.runs(JOB)]
    ran = sorted((r for r in runs if r["outcome"] != "skipped"), key=lambda r: r["started_at"])
    assert sum(r["items"] for r in ran) == total
    # Runs that held the lock never overlap in time, whichever worker ran them.
    for before, after in itertools.pairwise(ran):
        assert before["finished_at"] <= after["started_at"], (before, after)
    # The other worker found the lock taken while the first one worked.
    assert any(r["outcome"] == "skipped" for r in runs)
    assert all(unparsed(w.log_lines()) == [] for w in workers)
