from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import IdempotencyKeyReused, InvalidRequest
from services.ledger.errors import AccountNotFound, InsufficientCredits, InvalidAmount
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.spending import SpendResult, debit_adjustment, spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import (
    T0,
    bad_amounts,
    balance_of,
    entries_of,
    grant_credits,
    ledger_balance,
    lot_row,
    mint_card,
    movements_of,
    new_account,
    refusals,
    snapshot,
    transaction_of,
    violations,
)


def spend_credits(
    engine: Engine,
    account_id: int,
    amount_credits: int,
    key: str = "spend-1",
    now: datetime = T0,
    project: str | None = None,
    description: str | None = None,
) -> SpendResult:
    with unit_of_work(engine) as session:
        return spend(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=key,
            project=project,
            description=description,
            now=now,
        )


def test_spend_draws_the_soonest_expiring_lot_first(engine):
    account_id = new_account(engine)
    older = mint_card(engine, account_id, 100, at=T0)
    sooner = grant_credits(engine, account_id, 100, at=T0 + timedelta(days=1), expires_at=T0 + timedelta(days=30))

    result = spend_credits(engine, account_id, 60, now=T0 + timedelta(days=2))

    assert result.draws == [(sooner.lot_id, 60)]
    assert lot_row(engine, sooner.lot_id).remaining_credits == 40
    assert lot_row(engine, older.lot_id).remaining_credits == 100


def test_spend_draws_the_oldest_credited_lot_first_when_expiry_ties(engine):
    account_id = new_account(engine)
    expires_at = T0 + timedelta(days=90)
    # The newer lot gets the lower id, so credit time (not id) must decide.
    newer = grant_credits(engine, account_id, 100, at=T0 + timedelta(hours=1), expires_at=expires_at)
    older = grant_credits(engine, account_id, 100, at=T0, expires_at=expires_at)
    assert newer.lot_id < older.lot_id

    result = spend_credits(engine, account_id, 60, now=T0 + timedelta(hours=2))

    assert result.draws == [(older.lot_id, 60)]


def test_spend_draws_the_lowest_lot_id_first_when_expiry_and_credit_time_tie(engine):
    account_id = new_account(engine)
    expires_at = T0 + timedelta(days=90)
    first = grant_credits(engine, account_id, 100, at=T0, expires_at=expires_at)
    second = grant_credits(engine, account_id, 100, at=T0, expires_at=expires_at)

    result = spend_credits(engine, account_id, 60)

    assert first.lot_id < second.lot_id
    assert result.draws == [(first.lot_id, 60)]


def test_spend_spanning_several_lots_records_what_it_drew_from_each(engine):
    account_id = new_account(engine)
    first = grant_credits(engine, account_id, 30, expires_at=T0 + timedelta(days=10))
    second = grant_credits(engine, account_id, 50, expires_at=T0 + timedelta(days=20))
    third = mint_card(engine, account_id, 100)

    result = spend_credits(engine, account_id, 100, now=T0 + timedelta(days=1))

    assert result.draws == [(first.lot_id, 30), (second.lot_id, 50), (third.lot_id, 20)]
    assert movements_of(engine, result.transaction_id) == [
        (first.lot_id, MovementKind.SPEND, -30),
        (second.lot_id, MovementKind.SPEND, -50),
        (third.lot_id, MovementKind.SPEND, -20),
    ]
    assert [lot_row(engine, lot.lot_id).remaining_credits for lot in (first, second, third)] == [0, 0, 80]
    assert entries_of(engine, result.transaction_id) == {account_id: -100, SystemAccount.REVENUE_USAGE: 100}
    assert transaction_of(engine, result.transaction_id).kind == TransactionKind.SPEND
    assert ledger_balance(engine, account_id) == 80
    assert violations(engine) == []


def test_spend_skips_a_lot_whose_time_has_come_before_the_expiry_job_ran(engine):
    account_id = new_account(engine)
    expiring = grant_credits(engine, account_id, 100, expires_at=T0 + timedelta(days=1))
    lasting = mint_card(engine, account_id, 100)

    result = spend_credits(engine, account_id, 50, now=T0 + timedelta(days=1))

    assert result.draws == [(lasting.lot_id, 50)]
    assert lot_row(engine, expiring.lot_id).remaining_credits == 100


def test_spend_of_more_than_is_available_is_refused_and_writes_nothing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    grant_credits(engine, account_id, 100, expires_at=T0 + timedelta(days=1))
    before = snapshot(engine)

    with pytest.raises(InsufficientCredits) as refused:
        spend_credits(engine, account_id, 101, now=T0 + timedelta(days=2))

    assert refused.value.details["available_credits"] == 100
    assert refused.value.status_code == 402
    assert snapshot(engine) == before


def test_spend_of_exactly_the_balance_empties_the_account(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)

    spend_credits(engine, account_id, 100)

    assert balance_of(engine, account_id).available_credits == 0
    assert ledger_balance(engine, account_id) == 0


def test_spend_retried_with_the_same_key_and_request_replays_without_writing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    first = spend_credits(engine, account_id, 40, key="retry-me", project="alpha")
    before = snapshot(engine)

    again = spend_credits(engine, account_id, 40, key="retry-me", project="alpha", now=T0 + timedelta(minutes=5))

    assert again.replayed is True
    assert first.replayed is False
    assert (again.transaction_id, again.draws, again.created_at) == (first.transaction_id, first.draws, T0)
    assert snapshot(engine) == before
    assert ledger_balance(engine, account_id) == 60


@pytest.mark.parametrize(
    "change",
    [{"amount_credits": 41}, {"project": "beta"}, {"description": "another call"}],
)
def test_spend_key_reused_for_another_request_is_refused(engine, change):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 40, key="reused", project="alpha")
    before = snapshot(engine)
    request = {"amount_credits": 40, "project": "alpha"} | change

    with pytest.raises(IdempotencyKeyReused) as refused:
        spend_credits(engine, account_id, key="reused", **request)

    assert refused.value.code == "idempotency_key_reused"
    assert snapshot(engine) == before


def test_spend_keys_belong_to_one_account(engine):
    first, second = new_account(engine, "first"), new_account(engine, "second")
    mint_card(engine, first, 100)
    mint_card(engine, second, 100)

    one = spend_credits(engine, first, 10, key="same-key")
    other = spend_credits(engine, second, 10, key="same-key")

    assert other.replayed is False
    assert one.transaction_id != other.transaction_id
    assert (ledger_balance(engine, first), ledger_balance(engine, second)) == (90, 90)


def test_spend_refuses_an_invalid_amount_and_writes_nothing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)

    outcomes = refusals(engine, lambda amount: spend_credits(engine, account_id, amount), bad_amounts())

    assert outcomes == dict.fromkeys(outcomes, InvalidAmount.code)
    assert (InvalidAmount.code, InvalidAmount.status_code) == ("invalid_amount", 422)


def test_spend_needs_an_idempotency_key(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)

    with pytest.raises(InvalidRequest):
        spend_credits(engine, account_id, 10, key="")


def test_spend_from_an_unknown_account_is_refused(engine):
    with pytest.raises(AccountNotFound):
        spend_credits(engine, 999_999, 10)


def test_debit_adjustment_draws_like_a_spend_into_the_adjustments_account(engine):
    account_id = new_account(engine)
    sooner = grant_credits(engine, account_id, 30, expires_at=T0 + timedelta(days=5))
    later = mint_card(engine, account_id, 100)

    with unit_of_work(engine) as session:
        result = debit_adjustment(
            session,
            account_id=account_id,
            amount_credits=50,
            idempotency_key="ticket-9",
            reason="double credit",
            actor="admin@example.com",
            now=T0,
        )

    assert result.draws == [(sooner.lot_id, 30), (later.lot_id, 20)]
    assert entries_of(engine, result.transaction_id) == {account_id: -50, SystemAccount.ADJUSTMENTS: 50}
    assert {kind for _, kind, _ in movements_of(engine, result.transaction_id)} == {MovementKind.ADJUSTMENT}
    assert violations(engine) == []


def test_debit_adjustment_cannot_overdraw(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 10)

    with pytest.raises(InsufficientCredits), unit_of_work(engine) as session:
        debit_adjustment(
            session,
            account_id=account_id,
            amount_credits=11,
            idempotency_key="ticket-10",
            reason="too much",
            actor="admin@example.com",
            now=T0,
        )

    assert ledger_balance(engine, account_id) == 10
