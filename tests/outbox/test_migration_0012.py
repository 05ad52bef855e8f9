"""Migration 0012 (account emails and the outbox) goes up and down on both databases, keeping the accounts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from services.core.migrate import current_revision, downgrade, upgrade
from tests.card.test_migration_0010 import _columns

REVISION = "0012"


def test_outbox_migration_goes_up_and_down_keeping_the_accounts(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, REVISION)
    assert {"email", "email_verified"} <= _columns(engine, "accounts")
    assert "outbox_messages" in inspect(engine).get_table_names()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO accounts (kind, name, debt_credits, created_at) VALUES ('customer', 'a', 0, :now)"),
            {"now": now},
        )
        # An account written without the new columns is unverified, with no email.
        assert conn.execute(text("SELECT email, email_verified FROM accounts WHERE name = 'a'")).one() == (
            None,
            False,
        )

    downgrade(engine, "0011")
    assert current_revision(engine) == "0011"
    assert "email" not in _columns(engine, "accounts")
    assert "outbox_messages" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM accounts WHERE kind = 'customer'")).scalars().all() == ["a"]

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
    assert "email_verified" in _columns(engine, "accounts")
