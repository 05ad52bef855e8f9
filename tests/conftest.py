"""Test harness: every database test runs on SQLite and on PostgreSQL.

- SQLite: the schema is migrated once into a template file, copied for each test.
- PostgreSQL: a schema of its own per test run (so two runs never collide), migrated once, emptied between
  tests and dropped at the end. ``CREDITRAIL_TEST_POSTGRES_URL`` points elsewhere; PostgreSQL being unreachable
  fails the run, it is never skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.app.models import metadata
from services.core.db import make_engine
from services.core.migrate import upgrade
from services.ledger.system_accounts import seed_system_accounts

POSTGRES_URL = os.environ.get("CREDITRAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")

os.environ.setdefault("CREDITRAIL_ENVIRONMENT", "test")


class PostgresTestDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = f"t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        admin.dispose()
        self.engine = make_engine(url, schema=self.schema, pool_size=40)
        upgrade(self.engine)
        with self.engine.connect() as conn:
            sequences = conn.execute(
                text("SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = :schema"),
                {"schema": self.schema},
            ).scalars()
            restarts = [f'ALTER SEQUENCE "{name}" RESTART' for name in sequences]
        # DELETE beats TRUNCATE by far on tables this small. Triggers (the journal's append-only guards, and the
        # foreign-key checks) are off for this one transaction only.
        deletes = [f'DELETE FROM "{table.name}"' for table in reversed(metadata.sorted_tables)]
        self._reset_sql = "; ".join(["SET LOCAL session_replication_role = replica", *deletes, *restarts])

    def reset(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._reset_sql)
            seed_system_accounts(conn)

    def drop(self) -> None:
        self.engine.dispose()
        admin = make_engine(self.url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresTestDatabase]:
    database = PostgresTestDatabase(POSTGRES_URL)
    yield database
    database.drop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database (system accounts seeded) on the test's backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "creditrail.db"
        shutil.copyfile(template, path)
        sqlite_engine = make_engine(f"sqlite:///{path}")
        yield sqlite_engine
        sqlite_engine.dispose()
    else:
        database: PostgresTestDatabase = request.getfixturevalue("postgres_database")
        database.reset()
        yield database.engine


@pytest.fixture
def blank_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """A database with nothing in it (not even the migrations' table) on the test's backend, of the test's own (a
    file, or a schema dropped at the end): for tests that take migrations up and down."""
    if backend == "sqlite":
        sqlite_engine = make_engine(f"sqlite:///{tmp_path / 'blank.db'}")
        yield sqlite_engine
        sqlite_engine.dispose()
        return
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    blank = make_engine(POSTGRES_URL, schema=schema)
    try:
        yield blank
    finally:
        blank.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def empty_database(engine: Engine, backend: str, request: pytest.FixtureRequest) -> Callable[[], None]:
    """A function that empties the test's database back to freshly migrated (system accounts seeded), for tests
    that run many independent examples in one test (property tests). No session may be open when it is called."""
    if backend == "postgresql":
        database: PostgresTestDatabase = request.getfixturevalue("postgres_database")
        return database.reset
    template: Path = request.getfixturevalue("sqlite_template")
    path = Path(str(engine.url.database))

    def reset() -> None:
        engine.dispose()  # closes every pooled connection, which checkpoints and removes the WAL files
        for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(template, path)

    return reset


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest) -> Engine:
    """PostgreSQL only, for tests of row locks across connections."""
    database: PostgresTestDatabase = request.getfixturevalue("postgres_database")
    database.reset()
    return database.engine


# The loggers services.core.logs.configure_logging quiets or turns off (besides the root's handler and level).
_CONFIGURED_LOGGERS = ("apscheduler", "uvicorn.access", "stripe", "mail.log")


@pytest.fixture(autouse=True)
def logging_as_found() -> Iterator[None]:
    """A test that runs a command in-process (``creditrail dev``, the worker's CLI) configures logging for the whole
    process: the next test starts with the logging this one found (the root's level, no handler of the command's,
    the loggers it quieted), whatever order the tests run in. pytest's own capture handlers are left to pytest."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: (logging.getLogger(name).level, logging.getLogger(name).disabled) for name in _CONFIGURED_LOGGERS}
    yield
    for handler in list(root.handlers):
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)
    for name, (logger_level, disabled) in named.items():
        logging.getLogger(name).setLevel(logger_level)
        logging.getLogger(name).disabled = disabled
