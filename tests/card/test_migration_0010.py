"""Migration 0010 (the card rail's edges) goes up and down on both databases, keeping the rows it does not own."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.migrate import current_revision, downgrade, upgrade

REVISION = "0010"


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

    downgrade(engine, f"{REVISION}-1")

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
