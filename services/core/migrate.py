"""Schema migrations (Alembic), run by the service on start or by ``creditrail migrate``.

Any number of processes may start at once on the same database (API replicas, the worker, a one-shot migrate
service): the upgrade runs under a lock, so one of them migrates and the others, once it is done, find the schema
at its head. On PostgreSQL the lock is a transaction-level advisory lock taken on the migration's own connection
(keyed by database and schema, released by its commit or rollback, or by the server when the connection dies); on
a SQLite file it is an exclusive lock on a file beside the database, which the operating system releases however
the process ends (SIGKILL included). The current revision is read only once the lock is held.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from services.core.db import make_engine
from services.core.errors import CreditrailError
from services.core.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

log = logging.getLogger("creditrail.migrate")

PG_MIGRATION_LOCK_SQL = text(
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "'creditrail.migrate:' || current_database() || ':' || coalesce(current_schema(), ''), 0))"
)


class SchemaBehind(CreditrailError):
    code = "schema_behind"
    status_code = 503


class DatabaseUnavailable(CreditrailError):
    code = "database_unavailable"
    status_code = 503


@dataclass(frozen=True)
class MigrationResult:
    """The schema's revision before and after an upgrade."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def summary(self) -> str:
        if not self.changed:
            return f"schema is up to date ({self.after or 'empty'})"
        return f"schema migrated from {self.before or 'empty'} to {self.after}"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def sqlite_lock_path(engine: Engine) -> Path | None:
    """The file whose lock serialises migrations of a SQLite file (None for an in-memory database or PostgreSQL)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(f"{database}.migrate.lock")


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    path = sqlite_lock_path(engine)
    if path is None:
        yield
        return
    try:
        handle = open(path, "a+")  # noqa: SIM115 - closed below, which releases the lock
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot open the SQLite database {engine.url.database}: {exc.strerror or exc}", path=str(path)
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for whoever migrates now
        yield


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> MigrationResult:
    """Upgrade the schema to ``revision`` under the migration lock; safe to call from many processes at once."""
    config = alembic_config()
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(PG_MIGRATION_LOCK_SQL)
        before = _revision(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        return MigrationResult(before, _revision(connection))


def downgrade(engine: Engine, revision: str) -> MigrationResult:
    """Downgrade the schema to ``revision`` under the migration lock (an operator's way back, and the migrations'
    tests)."""
    config = alembic_config()
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(PG_MIGRATION_LOCK_SQL)
        before = _revision(connection)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        return MigrationResult(before, _revision(connection))


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Bring the schema to the latest revision, or refuse to go on when it is behind and upgrading is off."""
    if auto_migrate:
        if current_revision(engine) == head_revision():
            return  # the usual start: nothing to do, no lock to wait for
        result = upgrade(engine)
        if result.changed:
            log.info("schema_migrated", extra={"fields": {"from": result.before, "to": result.after}})
        return
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehind(
            f"the database schema is at {current or 'nothing'} but this version needs {head}; "
            "run `creditrail migrate` (or set CREDITRAIL_AUTO_MIGRATE=true)",
            current=current,
            head=head,
        )


def ready_engine(settings: Settings) -> Engine:
    """An engine for the configured database, its schema brought up to date (or refused when behind)."""
    engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
    ensure_schema(engine, auto_migrate=settings.auto_migrate)
    return engine
