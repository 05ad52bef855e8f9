"""Every public ledger operation is counted once, by kind and outcome, and timed (on both databases, so through
both ledger stores)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.metrics import LEDGER_KINDS, ledger_operation
from services.ledger.accounts import create_customer_account
from services.ledger.clawback import clawback, reinstate
from services.ledger.errors import InsufficientCredits
from services.ledger.expiry import expire_lots
from services.ledger.holds import capture_hold, create_hold, release_hold, sweep_expired_holds
from services.ledger.minting import credit_adjustment, grant, mint
from services.ledger.spending import debit_adjustment, spend
from services.ledger.system_accounts import SystemAccount


def _counts() -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "creditrail_ledger_operations_total":
                out[(sample.labels["kind"], sample.labels["outcome"])] = sample.value
            elif sample.name == "creditrail_ledger_operation_seconds_count":
                out[(sample.labels["kind"], "timed")] = sample.value
    return out


def test_each_ledger_operation_is_counted_once_by_kind_and_outcome(engine: Engine) -> None:
    before = _counts()
    now = utcnow()
    with unit_of_work(engine) as s:
        account = create_customer_account(s, name="counted")
        minted = mint(
            s,
            account_id=account,
            amount_credits=1_000,
            rail="card",
            external_ref="cs_counted",
            funding_account_id=SystemAccount.FUNDING_CARD,
        )
        grant(s, account_id=account, amount_credits=100, idempotency_key="g", expires_at=now + timedelta(seconds=5))
        credit_adjustment(s, account_id=account, amount_credits=10, idempotency_key="c", reason="goodwill", actor="ops")
        spend(s, account_id=account, amount_credits=10, idempotency_key="s")
        spend(s, account_id=account, amount_credits=10, idempotency_key="s")
        debit_adjustment(s, account_id=account, amount_credits=5, idempotency_key="d", reason="fix", actor="ops")
        held = create_hold(s, account_id=account, amount_credits=20, idempotency_key="h1")
        capture_hold(s, account_id=account, hold_id=held.id, amount_credits=15)
        other = create_hold(s, account_id=account, amount_credits=20, idempotency_key="h2")
        release_hold(s, account_id=account, hold_id=other.id)
        create_hold(s, account_id=account, amount_credits=20, idempotency_key="h3", ttl_seconds=1, now=now)
        clawback(s, lot_id=minted.lot_id, amount_credits=50, idempotency_key="r1", reason="refund")
        reinstate(s, lot_id=minted.lot_id, amount_credits=50, idempotency_key="w1", reason="dispute won")
    with unit_of_work(engine) as s:
        sweep_expired_holds(s, now=now + timedelta(seconds=2))
    with unit_of_work(engine) as s:
        expire_lots(s, now=now + timedelta(seconds=10))
    with pytest.raises(InsufficientCredits), unit_of_work(engine) as s:
        spend(s, account_id=account, amount_credits=10**6, idempotency_key="too-much")
    after = _counts()

    def delta(kind: str, outcome: str) -> float:
        return after.get((kind, outcome), 0.0) - before.get((kind, outcome), 0.0)

    expected = {
        ("mint", "ok"): 1,
        ("grant", "ok"): 1,
        ("credit", "ok"): 1,
        ("spend", "ok"): 1,
        ("spend", "replay"): 1,
        ("spend", "insufficient_credits"): 1,
        ("debit", "ok"): 1,
        ("hold", "ok"): 3,
        ("capture", "ok"): 1,
        ("release", "ok"): 1,
        ("hold_expiry", "ok"): 1,
        ("clawback", "ok"): 1,
        ("reinstate", "ok"): 1,
        ("expiry", "ok"): 1,
    }
    assert {key: delta(*key) for key in expected} == expected
    timed = {kind: delta(kind, "timed") for kind in LEDGER_KINDS}
    assert timed == {kind: sum(n for (k, _), n in expected.items() if k == kind) for kind in LEDGER_KINDS}


def test_an_unknown_kind_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="unknown ledger operation kind"):
        ledger_operation("teleport")
