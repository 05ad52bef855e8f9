from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.ledger.clawback import clawback, reinstate
from services.ledger.errors import InsufficientCredits
from services.ledger.expiry import ExpiryBatch, expire_lots
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.spending import SpendResult, spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import (
    T0,
    balance_of,
    entries_of,
    grant_credits,
    ledger_balance,
    lot_row,
    mint_card,
    movements_of,
    new_account,
    snapshot,
    transactions_of_kind,
    violations,
)


def run_expiry(engine: Engine, now: datetime, limit: int = 5_000) -> ExpiryBatch:
    with unit_of_work(engine) as session:
        return expire_lots(session, now=now, limit=limit)


def spend_credits(engine: Engine, account_id: int, amount_credits: int, key: str, now: datetime = T0) -> SpendResult:
    with unit_of_work(engine) as session:
        return spend(session, account_id=account_id, amount_credits=amount_credits, idempotency_key=key, now=now)


def test_expiry_moves_the_unspent_remainder_to_breakage_in_one_transaction(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 30, key="before-expiry")

    batch = run_expiry(engine, lot.expires_at)

    assert (batch.lots_expired, batch.credits_expired, batch.accounts) == (1, 70, 1)
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.expired_credits) == (0, 70)
    [expiry] = transactions_of_kind(engine, TransactionKind.EXPIRY)
    assert expiry.account_id == account_id
    assert expiry.created_at == lot.expires_at
    assert entries_of(engine, expiry.id) == {account_id: -70, SystemAccount.BREAKAGE: 70}
    assert movements_of(engine, expiry.id) == [(lot.lot_id, MovementKind.EXPIRY, -70)]
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_a_lot_expires_at_the_exact_instant_twelve_months_after_it_was_credited(engine):
    account_id = new_account(engine)
    credited_at = datetime(2024, 2, 29, 10, 30, tzinfo=UTC)
    lot = mint_card(engine, account_id, 100, at=credited_at)
    expires_at = datetime(2025, 2, 28, 10, 30, tzinfo=UTC)

    assert run_expiry(engine, expires_at - timedelta(microseconds=1)).lots_expired == 0
    assert balance_of(engine, account_id, expires_at - timedelta(microseconds=1)).available_credits == 100
    assert run_expiry(engine, expires_at).lots_expired == 1

    assert lot_row(engine, lot.lot_id).remaining_credits == 0
    assert balance_of(engine, account_id, expires_at).available_credits == 0


def test_credits_cannot_be_spent_once_their_time_has_come_even_before_the_job_runs(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)

    with pytest.raises(InsufficientCredits):
        spend_credits(engine, account_id, 1, key="too-late", now=lot.expires_at)

    assert balance_of(engine, account_id, lot.expires_at).available_credits == 0


def test_expiry_posts_one_transaction_per_account_for_all_its_due_lots(engine):
    first, second = new_account(engine, "first"), new_account(engine, "second")
    due_at = T0 + timedelta(days=10)
    for account_id in (first, second):
        grant_credits(engine, account_id, 10, expires_at=due_at)
        grant_credits(engine, account_id, 20, expires_at=due_at - timedelta(days=1))
    lasting = mint_card(engine, first, 500)

    batch = run_expiry(engine, due_at)

    assert (batch.lots_expired, batch.credits_expired, batch.accounts) == (4, 60, 2)
    expiries = transactions_of_kind(engine, TransactionKind.EXPIRY)
    assert {txn.account_id: entries_of(engine, txn.id) for txn in expiries} == {
        first: {first: -30, SystemAccount.BREAKAGE: 30},
        second: {second: -30, SystemAccount.BREAKAGE: 30},
    }
    assert lot_row(engine, lasting.lot_id).remaining_credits == 500
    assert (ledger_balance(engine, first), ledger_balance(engine, second)) == (500, 0)
    assert violations(engine) == []


def test_running_expiry_again_changes_nothing(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    run_expiry(engine, lot.expires_at)
    before = snapshot(engine)

    batch = run_expiry(engine, lot.expires_at + timedelta(days=1))

    assert (batch.lots_expired, batch.credits_expired, batch.accounts) == (0, 0, 0)
    assert snapshot(engine) == before


def test_expiry_works_in_bounded_batches_soonest_first(engine):
    account_id = new_account(engine)
    lots = [grant_credits(engine, account_id, 10, expires_at=T0 + timedelta(days=n)) for n in (3, 1, 2)]

    first = run_expiry(engine, T0 + timedelta(days=5), limit=2)
    assert (first.lots_expired, first.credits_expired) == (2, 20)
    assert lot_row(engine, lots[0].lot_id).remaining_credits == 10
    second = run_expiry(engine, T0 + timedelta(days=5), limit=2)

    assert (second.lots_expired, second.credits_expired) == (1, 10)
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_a_fully_spent_lot_is_not_expired(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 100, key="all-of-it")

    batch = run_expiry(engine, lot.expires_at)

    assert batch.lots_expired == 0
    assert transactions_of_kind(engine, TransactionKind.EXPIRY) == []


def test_breakage_accumulates_what_expired(engine):
    account_id = new_account(engine)
    grant_credits(engine, account_id, 10, expires_at=T0 + timedelta(days=1))
    grant_credits(engine, account_id, 25, expires_at=T0 + timedelta(days=2))

    run_expiry(engine, T0 + timedelta(days=1))
    run_expiry(engine, T0 + timedelta(days=2))

    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 35
    assert len(transactions_of_kind(engine, TransactionKind.EXPIRY)) == 2
    assert violations(engine) == []


def test_a_lot_due_again_at_the_same_instant_after_a_clawback_and_reinstatement_expires_again(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    at = lot.expires_at
    run_expiry(engine, at)
    with unit_of_work(engine) as session:
        clawback(session, lot_id=lot.lot_id, amount_credits=100, idempotency_key="cb", reason="refund", now=at)
    with unit_of_work(engine) as session:
        reinstate(session, lot_id=lot.lot_id, amount_credits=100, idempotency_key="rs", reason="won", now=at)

    batch = run_expiry(engine, at)

    assert (batch.lots_expired, batch.credits_expired) == (1, 100)
    assert len(transactions_of_kind(engine, TransactionKind.EXPIRY)) == 2
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []
