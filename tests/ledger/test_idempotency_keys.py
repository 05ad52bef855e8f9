"""An idempotency key reused with a different request is refused (and writes nothing); the same request replays.

Admin adjustments of either sign share one key space, and a grant's or an adjustment's reason and expiry are part
of the request. On PostgreSQL these run through the PostgreSQL store (tests/ledger/test_stores.py compares it
with the Core store)."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import IdempotencyKeyReused
from services.ledger.minting import MintResult, credit_adjustment, grant
from services.ledger.spending import SpendResult, debit_adjustment
from tests.ledger.support import T0, ledger_balance, mint_card, new_account, table_counts


def _adjust(engine: Engine, account_id: int, amount_credits: int, key: str, reason: str = "ticket") -> Any:
    with unit_of_work(engine) as session:
        if amount_credits >= 0:
            return credit_adjustment(
                session,
                account_id=account_id,
                amount_credits=amount_credits,
                idempotency_key=key,
                reason=reason,
                actor="admin",
                now=T0,
            )
        return debit_adjustment(
            session,
            account_id=account_id,
            amount_credits=-amount_credits,
            idempotency_key=key,
            reason=reason,
            actor="admin",
            now=T0,
        )


def _grant(engine: Engine, account_id: int, key: str, **asked: Any) -> MintResult:
    with unit_of_work(engine) as session:
        return grant(session, account_id=account_id, amount_credits=100, idempotency_key=key, now=T0, **asked)


def _refused(engine: Engine, call: Any) -> None:
    before = table_counts(engine)
    with pytest.raises(IdempotencyKeyReused):
        call()
    assert table_counts(engine) == before


@pytest.mark.parametrize(("first", "second"), [(13, -13), (-13, 13)])
def test_an_adjustment_key_used_for_one_sign_is_refused_for_the_other(engine, first: int, second: int) -> None:
    account_id = new_account(engine)
    mint_card(engine, account_id, 1_000)
    _adjust(engine, account_id, first, "ticket-7")
    _refused(engine, lambda: _adjust(engine, account_id, second, "ticket-7"))
    assert ledger_balance(engine, account_id) == 1_000 + first


@pytest.mark.parametrize("amount_credits", [13, -13])
def test_an_adjustment_replays_only_with_the_same_amount_and_reason(engine, amount_credits: int) -> None:
    account_id = new_account(engine)
    mint_card(engine, account_id, 1_000)
    first = _adjust(engine, account_id, amount_credits, "ticket-8", reason="goodwill")
    again = _adjust(engine, account_id, amount_credits, "ticket-8", reason="goodwill")
    assert isinstance(again, MintResult | SpendResult)
    assert (again.replayed, again.transaction_id) == (True, first.transaction_id)
    _refused(engine, lambda: _adjust(engine, account_id, amount_credits, "ticket-8", reason="another reason"))
    _refused(engine, lambda: _adjust(engine, account_id, amount_credits * 2, "ticket-8", reason="goodwill"))
    assert ledger_balance(engine, account_id) == 1_000 + amount_credits


def test_a_grant_replays_only_with_the_same_expiry_and_reason(engine) -> None:
    account_id = new_account(engine)
    expires_at = T0 + timedelta(days=30)
    first = _grant(engine, account_id, "welcome", expires_at=expires_at, reason="welcome pack")
    # The same instant in another offset is the same request.
    same_instant = expires_at.astimezone(timezone(timedelta(hours=5)))
    again = _grant(engine, account_id, "welcome", expires_at=same_instant, reason="welcome pack")
    assert (again.replayed, again.lot_id) == (True, first.lot_id)
    _refused(engine, lambda: _grant(engine, account_id, "welcome", expires_at=expires_at, reason="other"))
    _refused(engine, lambda: _grant(engine, account_id, "welcome", expires_at=expires_at + timedelta(days=1)))
    _refused(engine, lambda: _grant(engine, account_id, "welcome", reason="welcome pack"))
    assert ledger_balance(engine, account_id) == 100
