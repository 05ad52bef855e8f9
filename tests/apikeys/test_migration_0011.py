"""Migration 0011 (customer sessions) goes up and down on both databases, keeping the API keys it does not own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.db import make_engine
from services.core.migrate import alembic_config, current_revision, upgrade
from tests.conftest import POSTGRES_URL

REVISION = "0011"


@pytest.fixture
def blank_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of the test's backend, of this test's own (a file, or a schema dropped at the end)."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield engine
        engine.dispose()
        return
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(POSTGRES_URL, schema=schema)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_customer_sessions_migration_goes_up_and_down_keeping_the_keys(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, REVISION)
    assert "customer_sessions" in inspect(engine).get_table_names()
    assert "ix_customer_sessions_account_id" in {
        str(index["name"]) for index in inspect(engine).get_indexes("customer_sessions")
    }
    now = datetime(2026, 12, 7, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO accounts (id, kind, name, debt_credits, created_at)"
                " VALUES (100, 'customer', 'acme', 0, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, prefix, secret_sha256, role, name, created_at)"
                " VALUES (7, 'abc', 'digest', 'platform', 'platform', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO customer_sessions (prefix, token_sha256, account_id, created_by_key_id, lifetime_seconds,"
                " created_at, renewed_at, expires_at, max_expires_at) VALUES ('def', 'digest', 100, 7, 1800, :now,"
                " :now, :now, :now)"
            ),
            {"now": now},
        )

    _downgrade(engine, "0010")

    assert current_revision(engine) == "0010"
    assert "customer_sessions" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role FROM api_keys")).scalars().all() == ["platform"]

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
    assert "customer_sessions" in inspect(engine).get_table_names()
