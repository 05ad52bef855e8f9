"""Migration 0015 (the card that paid a purchase) goes up and down on both databases, keeping the purchases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.core.migrate import current_revision, downgrade, upgrade
from tests.card.test_migration_0010 import _columns

REVISION = "0015"


def test_card_brand_migration_goes_up_and_down_keeping_the_purchases(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, "0014")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO accounts (kind, name, debt_credits, created_at) VALUES ('customer', 'a', 0, :now)"),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO card_purchases (account_id, kind, pack, amount_credits, amount_cents, status, "
                "idempotency_key, request_hash, save_card, refunded_cents, stripe_attempts, created_at, updated_at) "
                "SELECT id, 'checkout', 'standard', 1000, 1000, 'completed', 'checkout:k', 'h', false, 0, 0, :now, "
                ":now FROM accounts WHERE name = 'a'"
            ),
            {"now": now},
        )

    upgrade(engine, REVISION)
    assert {"card_brand", "card_last4"} <= _columns(engine, "card_purchases")
    with engine.begin() as conn:
        # A purchase made before: its card is not known.
        assert conn.execute(text("SELECT card_brand, card_last4 FROM card_purchases")).one() == (None, None)
        conn.execute(text("UPDATE card_purchases SET card_brand = 'visa', card_last4 = '4242'"))

    downgrade(engine, "0014")
    assert current_revision(engine) == "0014"
    assert "card_brand" not in _columns(engine, "card_purchases")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT idempotency_key FROM card_purchases")).scalars().all() == ["checkout:k"]

    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
