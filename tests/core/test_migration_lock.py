"""Migrations under a lock: processes that start together on an empty database all end well, on one schema at its
head (``creditrail migrate`` raced by real processes, on PostgreSQL and on a SQLite file)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.core.db import make_engine
from services.core.migrate import PG_MIGRATION_LOCK_SQL, current_revision, head_revision, sqlite_lock_path, upgrade
from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
# Without the lock PostgreSQL fails in the first round nearly every time (a duplicate key in the catalog or in
# alembic_version). SQLite's window is narrow, since its BEGIN IMMEDIATE already serialises the migrations: two first
# connections switching a fresh file to WAL at once ("database is locked"), a few times in a hundred rounds; the
# tests after this one show both locks waited for, every time.
ROUNDS = {"postgresql": 3, "sqlite": 6}


class Racers:
    """``PROCESSES`` migrate processes, each round handed the same database and let go at once."""

    def __init__(self, count: int, barrier: Path) -> None:
        self.barrier = barrier
        barrier.touch()
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.core.migrate_racer"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        for process in self.processes:
            assert self._answer(process) == {"ready": True}

    @staticmethod
    def _answer(process: subprocess.Popen[str]) -> Any:
        assert process.stdout is not None
        line = process.stdout.readline()  # each answers within seconds or exits (and then the line is empty)
        assert line, f"a migrate process exited with status {process.wait()}"
        return json.loads(line)

    def race(self, database_url: str) -> list[dict[str, Any]]:
        with open(self.barrier) as gate:
            fcntl.flock(gate, fcntl.LOCK_EX)
            for process in self.processes:
                assert process.stdin is not None
                process.stdin.write(json.dumps({"database_url": database_url, "barrier": str(self.barrier)}) + "\n")
                process.stdin.flush()
            for process in self.processes:
                assert self._answer(process) == {"waiting": True}
        # The gate is open: every racer migrates now.
        return [self._answer(process) for process in self.processes]

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def racers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Racers]:
    started = Racers(PROCESSES, tmp_path_factory.mktemp("race") / "barrier")
    yield started
    started.close()


def fresh_postgres_schema() -> tuple[str, str]:
    schema = f"t_mig_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    separator = "&" if "?" in POSTGRES_URL else "?"
    return schema, f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"


def drop_postgres_schema(schema: str) -> None:
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def test_processes_migrating_at_once_all_succeed_on_one_schema_at_head(
    racers: Racers, backend: str, tmp_path: Path
) -> None:
    for round_number in range(ROUNDS[backend]):
        schema = None
        if backend == "postgresql":
            schema, url = fresh_postgres_schema()
            engine = make_engine(POSTGRES_URL, schema=schema)
        else:
            url = f"sqlite:///{tmp_path / f'race{round_number}.db'}"
            engine = make_engine(url)
        try:
            answers = racers.race(url)
            assert [a for a in answers if not a["ok"]] == [], f"round {round_number}"
            assert current_revision(engine) == head_revision()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        finally:
            engine.dispose()
            if schema is not None:
                drop_postgres_schema(schema)


def test_sqlite_migration_lock_sits_beside_the_database_file(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    result = upgrade(engine)
    assert (result.before, result.after) == (None, head_revision())
    assert sqlite_lock_path(engine) == tmp_path / "app.db.migrate.lock"
    assert (tmp_path / "app.db.migrate.lock").exists()
    assert upgrade(engine).changed is False
    assert sqlite_lock_path(make_engine("sqlite://")) is None


# --- the lock itself: a migration waits for whoever holds it -------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def start_migrate(database_url: str, cwd: Path) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDITRAIL_")}
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "migrate"],
        cwd=cwd,
        env=env | {"CREDITRAIL_DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def blocked_on_flock(process: subprocess.Popen[str], path: Path) -> bool:
    """Whether ``process`` waits for a flock on ``path`` (Linux lists waiters in /proc/locks after "->"); fails at
    once if it ended instead."""
    assert process.poll() is None, process.communicate()
    inode = f":{path.stat().st_ino} "
    return any(
        "->" in line and "FLOCK" in line and f" {process.pid} " in line and inode in line
        for line in Path("/proc/locks").read_text().splitlines()
    )


def test_sqlite_migration_waits_for_the_file_lock_beside_the_database(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    lock_path = Path(f"{database}.migrate.lock")
    with open(lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = start_migrate(f"sqlite:///{database}", tmp_path)
        try:
            wait_until(lambda: blocked_on_flock(process, lock_path), "migrate to wait for the file lock")
            assert process.poll() is None
            assert not database.exists()  # nothing touched the database while the lock was held
        except BaseException:
            process.kill()
            raise
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (0, f"schema migrated from empty to {head_revision()}\n", "")


def test_postgresql_migration_waits_for_the_advisory_lock(tmp_path: Path) -> None:
    schema, url = fresh_postgres_schema()
    engine = make_engine(POSTGRES_URL, schema=schema)
    try:
        with engine.begin() as holder:
            holder.execute(PG_MIGRATION_LOCK_SQL)  # the lock a migration of this database and schema takes
            process = start_migrate(url, tmp_path)
            try:
                wait_until(
                    lambda: waits_for_an_advisory_lock(engine, process),
                    "migrate to wait for the advisory lock",
                )
                assert process.poll() is None
            except BaseException:
                process.kill()
                raise
        out, err = process.communicate(timeout=60)
        assert (process.returncode, out, err) == (0, f"schema migrated from empty to {head_revision()}\n", "")
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
        drop_postgres_schema(schema)


def waits_for_an_advisory_lock(engine: Engine, process: subprocess.Popen[str]) -> bool:
    assert process.poll() is None, process.communicate()
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
        tables = conn.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()")
        ).scalar_one()
    assert tables == 0  # nothing migrated while the lock is held
    return bool(waiting)
