"""Migration 0017 (wallets) goes up and down on both databases, keeping the sessions that keys created."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.migrate import current_revision, downgrade, upgrade

REVISION = "0017"


def test_wallets_migration_goes_up_and_down_keeping_key_sessions(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, REVISION)
    tables = set(inspect(engine).get_table_names())
    assert {"wallets", "wallet_request_nonces", "wallet_challenges"} <= tables
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
                "INSERT INTO wallets (id, address, account_id, linked_via, created_at)"
                " VALUES (3, '0x52908400098527886e0f7030069857d2e4169ee7', 100, 'sign_in', :now)"
            ),
            {"now": now},
        )
        for prefix, key_id, wallet_id in (("bykey", 7, None), ("bywallet", None, 3)):
            conn.execute(
                text(
                    "INSERT INTO customer_sessions (prefix, token_sha256, account_id, created_by_key_id, wallet_id,"
                    " lifetime_seconds, created_at, renewed_at, expires_at, max_expires_at)"
                    " VALUES (:prefix, 'digest', 100, :key_id, :wallet_id, 1800, :now, :now, :now, :now)"
                ),
                {"prefix": prefix, "key_id": key_id, "wallet_id": wallet_id, "now": now},
            )

    downgrade(engine, "0016")

    assert current_revision(engine) == "0016"
    assert "wallets" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT prefix FROM customer_sessions")).scalars().all() == ["bykey"]

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
    assert "wallet_id" in {column["name"] for column in inspect(engine).get_columns("customer_sessions")}
