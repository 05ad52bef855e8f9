"""Migration 0011 (customer sessions) goes up and down on both databases, keeping the API keys it does not own."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.migrate import current_revision, downgrade, upgrade

REVISION = "0011"


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

    downgrade(engine, "0010")

    assert current_revision(engine) == "0010"
    assert "customer_sessions" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role FROM api_keys")).scalars().all() == ["platform"]

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
    assert "customer_sessions" in inspect(engine).get_table_names()
