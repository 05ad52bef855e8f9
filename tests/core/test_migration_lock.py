"""Migrations under a lock: processes that start together on an empty database all end well, on one schema at its
head (``creditrail migrate`` raced by real processes, on PostgreSQL and on a SQLite file)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text

from services.core.db import make_engine
from services.core.migrate import current_revision, head_revision, sqlite_lock_path, upgrade
from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
ROUNDS = 5


class Racers:
    """``PROCESSES`` migrate processes, handed each round's database at once."""

    def __init__(self, count: int) -> None:
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
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(database_url + "\n")
            process.stdin.flush()
        return [self._answer(process) for process in self.processes]

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    started = Racers(PROCESSES)
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
    for round_number in range(ROUNDS):
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
