import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import IdempotencyKeyReused
from services.ledger.clawback import ClawbackExceedsLot, ClawbackResult, clawback, reinstate
from services.ledger.errors import InsufficientCredits, InvalidAmount, LotNotFound, ReinstatementExceedsClawback
from services.ledger.expiry import expire_lots
from services.ledger.holds import capture_hold, create_hold
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.spending import SpendResult, spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import (
    T0,
    bad_amounts,
    balance_of,
    debt_of,
    entries_of,
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


def next_key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def claw(
    engine: Engine, lot_id: int, amount_credits: int, key: str | None = None, now: datetime = T0
) -> ClawbackResult:
    with unit_of_work(engine) as session:
        return clawback(
            session,
            lot_id=lot_id,
            amount_credits=amount_credits,
            idempotency_key=key or next_key("refund"),
            reason="refund",
            now=now,
        )


def reinstate_credits(
    engine: Engine, lot_id: int, amount_credits: int, key: str | None = None, now: datetime = T0
) -> ClawbackResult:
    with unit_of_work(engine) as session:
        return reinstate(
            session,
            lot_id=lot_id,
            amount_credits=amount_credits,
            idempotency_key=key or next_key("dispute-won"),
            reason="dispute won",
            now=now,
        )


def spend_credits(engine: Engine, account_id: int, amount_credits: int, now: datetime = T0) -> SpendResult:
    with unit_of_work(engine) as session:
        return spend(
            session, account_id=account_id, amount_credits=amount_credits, idempotency_key=next_key("spend"), now=now
        )


def test_clawback_takes_unspent_credits_back_from_the_lot(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)

    result = claw(engine, lot.lot_id, 40)

    assert (result.from_lot_credits, result.from_breakage_credits, result.debt_credits) == (40, 0, 0)
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.clawed_back_credits) == (60, 40)
    assert entries_of(engine, result.transaction_id) == {account_id: -40, SystemAccount.CLAWBACKS: 40}
    assert transaction_of(engine, result.transaction_id).kind == TransactionKind.CLAWBACK
    assert movements_of(engine, result.transaction_id) == [(lot.lot_id, MovementKind.CLAWBACK, -40)]
    assert debt_of(engine, account_id) == 0
    assert violations(engine) == []


def test_clawback_of_spent_credits_puts_the_account_into_debt(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 70)

    result = claw(engine, lot.lot_id, 100)

    assert (result.from_lot_credits, result.from_breakage_credits, result.debt_credits) == (30, 0, 70)
    assert lot_row(engine, lot.lot_id).remaining_credits == 0
    assert debt_of(engine, account_id) == 70
    balance = balance_of(engine, account_id)
    assert (balance.total_credits, balance.available_credits, balance.debt_credits) == (-70, 0, 70)
    assert ledger_balance(engine, account_id) == -70
    assert entries_of(engine, result.transaction_id) == {account_id: -100, SystemAccount.CLAWBACKS: 100}
    assert violations(engine) == []


def test_the_next_mint_repays_debt_first(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 100)
    claw(engine, lot.lot_id, 100)

    partial = mint_card(engine, account_id, 60, at=T0 + timedelta(days=1))
    assert partial.debt_repaid_credits == 60
    assert lot_row(engine, partial.lot_id).remaining_credits == 0
    assert debt_of(engine, account_id) == 40
    assert movements_of(engine, partial.transaction_id) == [
        (partial.lot_id, MovementKind.MINT, 60),
        (partial.lot_id, MovementKind.DEBT_REPAYMENT, -60),
    ]

    rest = mint_card(engine, account_id, 100, at=T0 + timedelta(days=2))

    assert rest.debt_repaid_credits == 40
    assert lot_row(engine, rest.lot_id).remaining_credits == 60
    assert debt_of(engine, account_id) == 0
    assert ledger_balance(engine, account_id) == 60
    assert balance_of(engine, account_id, T0 + timedelta(days=2)).available_credits == 60
    assert violations(engine) == []


def test_replayed_mint_reports_the_debt_it_repaid(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 100)
    claw(engine, lot.lot_id, 30)
    first = mint_card(engine, account_id, 50, ref="pi_test_repay")

    again = mint_card(engine, account_id, 50, ref="pi_test_repay")

    assert (first.debt_repaid_credits, again.debt_repaid_credits, again.replayed) == (30, 30, True)
    assert debt_of(engine, account_id) == 0


def test_clawback_of_expired_credits_reverses_breakage_instead_of_making_debt(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 30)
    with unit_of_work(engine) as session:
        expire_lots(session, now=lot.expires_at)
    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 70

    result = claw(engine, lot.lot_id, 70, now=lot.expires_at + timedelta(days=1))

    assert (result.from_lot_credits, result.from_breakage_credits, result.debt_credits) == (0, 70, 0)
    assert entries_of(engine, result.transaction_id) == {SystemAccount.CLAWBACKS: 70, SystemAccount.BREAKAGE: -70}
    assert lot_row(engine, lot.lot_id).expired_credits == 0
    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 0
    assert debt_of(engine, account_id) == 0
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_clawback_beyond_the_expired_credits_makes_debt_for_the_spent_part(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 30)
    with unit_of_work(engine) as session:
        expire_lots(session, now=lot.expires_at)

    result = claw(engine, lot.lot_id, 100, now=lot.expires_at + timedelta(days=1))

    assert (result.from_lot_credits, result.from_breakage_credits, result.debt_credits) == (0, 70, 30)
    assert entries_of(engine, result.transaction_id) == {
        account_id: -30,
        SystemAccount.CLAWBACKS: 100,
        SystemAccount.BREAKAGE: -70,
    }
    assert debt_of(engine, account_id) == 30
    assert violations(engine) == []


def test_clawback_does_not_take_reserved_credits_and_the_hold_still_captures(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    with unit_of_work(engine) as session:
        held = create_hold(session, account_id=account_id, amount_credits=60, idempotency_key="call", now=T0)

    result = claw(engine, lot.lot_id, 100)

    assert (result.from_lot_credits, result.debt_credits) == (40, 60)
    with unit_of_work(engine) as session:
        captured = capture_hold(session, account_id=account_id, hold_id=held.id, amount_credits=60, now=T0)
    assert captured.captured_credits == 60
    assert debt_of(engine, account_id) == 60
    assert ledger_balance(engine, account_id) == -60
    assert violations(engine) == []


def test_reinstatement_cancels_debt_first_then_restores_the_lot(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 70)
    claw(engine, lot.lot_id, 100)

    result = reinstate_credits(engine, lot.lot_id, 100, now=T0 + timedelta(days=3))

    assert (result.debt_credits, result.from_lot_credits) == (70, 30)
    assert debt_of(engine, account_id) == 0
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.clawed_back_credits) == (30, 0)
    assert entries_of(engine, result.transaction_id) == {SystemAccount.CLAWBACKS: -100, account_id: 100}
    assert transaction_of(engine, result.transaction_id).kind == TransactionKind.REINSTATEMENT
    assert movements_of(engine, result.transaction_id) == [(lot.lot_id, MovementKind.REINSTATEMENT, 30)]
    assert ledger_balance(engine, account_id) == 30
    assert ledger_balance(engine, SystemAccount.CLAWBACKS) == 0
    assert violations(engine) == []


def test_partial_reinstatement_only_reduces_debt(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 70)
    claw(engine, lot.lot_id, 100)

    result = reinstate_credits(engine, lot.lot_id, 50)

    assert (result.debt_credits, result.from_lot_credits) == (50, 0)
    assert debt_of(engine, account_id) == 20
    assert lot_row(engine, lot.lot_id).remaining_credits == 0
    assert movements_of(engine, result.transaction_id) == []
    assert violations(engine) == []


def test_reinstated_credits_on_an_expired_lot_go_to_breakage_again(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    with unit_of_work(engine) as session:
        expire_lots(session, now=lot.expires_at)
    claw(engine, lot.lot_id, 100, now=lot.expires_at + timedelta(days=1))

    reinstate_credits(engine, lot.lot_id, 100, now=lot.expires_at + timedelta(days=2))

    # At once, in the reinstatement's own transaction: nothing is left for the expiry job.
    assert lot_row(engine, lot.lot_id).remaining_credits == 0
    assert lot_row(engine, lot.lot_id).expired_credits == 100
    assert balance_of(engine, account_id, lot.expires_at + timedelta(days=2)).available_credits == 0
    with unit_of_work(engine) as session:
        batch = expire_lots(session, now=lot.expires_at + timedelta(days=2))
    assert batch.lots_expired == 0
    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 100
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_clawback_of_more_than_the_lot_minted_is_refused(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    before = snapshot(engine)

    with pytest.raises(ClawbackExceedsLot) as refused:
        claw(engine, lot.lot_id, 101)

    assert refused.value.code == "clawback_exceeds_lot"
    assert snapshot(engine) == before


def test_clawbacks_of_a_lot_add_up_to_at_most_what_it_minted(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    claw(engine, lot.lot_id, 60)

    with pytest.raises(ClawbackExceedsLot):
        claw(engine, lot.lot_id, 41)
    claw(engine, lot.lot_id, 40)

    with pytest.raises(ClawbackExceedsLot):
        claw(engine, lot.lot_id, 1)
    assert lot_row(engine, lot.lot_id).clawed_back_credits == 100


def test_reinstatement_of_more_than_was_clawed_back_is_refused(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    claw(engine, lot.lot_id, 40)
    before = snapshot(engine)

    with pytest.raises(ReinstatementExceedsClawback):
        reinstate_credits(engine, lot.lot_id, 41)

    assert snapshot(engine) == before
    reinstate_credits(engine, lot.lot_id, 40)
    with pytest.raises(ReinstatementExceedsClawback):
        reinstate_credits(engine, lot.lot_id, 1)


def test_a_reinstated_lot_can_be_clawed_back_again(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    claw(engine, lot.lot_id, 100)
    reinstate_credits(engine, lot.lot_id, 100)

    again = claw(engine, lot.lot_id, 100)

    assert again.from_lot_credits == 100
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_a_customer_in_debt_can_spend_only_what_exceeds_the_debt(engine):
    account_id = new_account(engine)
    disputed = mint_card(engine, account_id, 100, at=T0)
    mint_card(engine, account_id, 150, at=T0 + timedelta(days=1))
    spend_credits(engine, account_id, 100, now=T0 + timedelta(days=1))  # all from the first lot
    claw(engine, disputed.lot_id, 100, now=T0 + timedelta(days=1))
    assert debt_of(engine, account_id) == 100
    later = T0 + timedelta(days=2)
    assert balance_of(engine, account_id, later).available_credits == 50

    with pytest.raises(InsufficientCredits) as refused:
        spend_credits(engine, account_id, 51, now=later)
    assert refused.value.details["available_credits"] == 50
    with unit_of_work(engine) as session:
        create_hold(session, account_id=account_id, amount_credits=20, idempotency_key="call", now=later)
    with pytest.raises(InsufficientCredits):
        spend_credits(engine, account_id, 31, now=later)
    spend_credits(engine, account_id, 30, now=later)

    assert balance_of(engine, account_id, later).available_credits == 0
    assert ledger_balance(engine, account_id) == 150 - 100 - 30
    assert violations(engine) == []


def test_clawback_retried_with_the_same_key_replays_without_writing(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 80)
    first = claw(engine, lot.lot_id, 50, key="ch_refund_1")
    before = snapshot(engine)

    again = claw(engine, lot.lot_id, 50, key="ch_refund_1")

    assert again.replayed is True
    assert (again.transaction_id, again.from_lot_credits, again.debt_credits) == (
        first.transaction_id,
        first.from_lot_credits,
        first.debt_credits,
    )
    assert snapshot(engine) == before
    with pytest.raises(IdempotencyKeyReused):
        claw(engine, lot.lot_id, 49, key="ch_refund_1")


def test_reinstatement_retried_with_the_same_key_replays_without_writing(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    claw(engine, lot.lot_id, 50)
    first = reinstate_credits(engine, lot.lot_id, 50, key="dp_won_1")
    before = snapshot(engine)

    again = reinstate_credits(engine, lot.lot_id, 50, key="dp_won_1")

    assert (again.replayed, again.transaction_id) == (True, first.transaction_id)
    assert snapshot(engine) == before


def test_clawback_of_an_unknown_lot_is_refused(engine):
    with pytest.raises(LotNotFound):
        claw(engine, 999_999, 10)
    with pytest.raises(LotNotFound):
        reinstate_credits(engine, 999_999, 10)


def test_clawback_and_reinstatement_refuse_an_invalid_amount_and_write_nothing(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    claw(engine, lot.lot_id, 50)

    clawbacks = refusals(engine, lambda amount: claw(engine, lot.lot_id, amount), bad_amounts())
    reinstatements = refusals(engine, lambda amount: reinstate_credits(engine, lot.lot_id, amount), bad_amounts())

    assert clawbacks == dict.fromkeys(clawbacks, InvalidAmount.code)
    assert reinstatements == dict.fromkeys(reinstatements, InvalidAmount.code)
