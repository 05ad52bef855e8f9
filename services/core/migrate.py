"""Schema migrations (Alembic), run by the service on start or by ``creditrail migrate``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from services.core.db import make_engine
from services.core.errors import CreditrailError
from services.core.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class SchemaBehind(CreditrailError):
    code = "schema_behind"
    status_code = 503


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Bring the schema to the latest revision, or refuse to go on when it is behind and upgrading is off."""
    if auto_migrate:
        upgrade(engine)
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
