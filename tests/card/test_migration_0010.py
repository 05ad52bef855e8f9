"""Migration 0010 (the card rail's edges) goes up and down on both databases, keeping the rows it does not own."""

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

REVISION = "0010"


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


def _columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def _indexes(engine: Engine, table: str) -> set[str]:
    return {str(index["name"]) for index in inspect(engine).get_indexes(table)}


def test_card_edges_migration_goes_up_and_down_keeping_the_inbox(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, REVISION)
    assert "checkout_expires_at" in _columns(engine, "card_purchases")
    assert "ix_card_purchases_status_checkout_expires_at" in _indexes(engine, "card_purchases")
    assert "purchase_id" in _columns(engine, "stripe_webhook_events")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stripe_webhook_events (event_id, event_type, livemode, stripe_created_at, source, payload,"
                " status, attempts, received_at, purchase_id) VALUES ('evt_1', 'checkout.session.completed', false,"
                " :now, 'webhook', '{}', 'processed', 1, :now, 7)"
            ),
            {"now": now},
        )

    _downgrade(engine, f"{REVISION}-1")

    assert current_revision(engine) != REVISION
    assert "checkout_expires_at" not in _columns(engine, "card_purchases")
    assert "ix_card_purchases_status_checkout_expires_at" not in _indexes(engine, "card_purchases")
    assert "purchase_id" not in _columns(engine, "stripe_webhook_events")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT event_id FROM stripe_webhook_events")).scalars().all() == ["evt_1"]

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
    assert "checkout_expires_at" in _columns(engine, "card_purchases")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT purchase_id FROM stripe_webhook_events")).scalars().all() == [None]
