from datetime import UTC, datetime, timedelta

import pytest

from services.core.db import unit_of_work
from services.core.errors import IdempotencyKeyReused, InvalidRequest
from services.core.settings import get_settings
from services.ledger.errors import AccountNotFound, InvalidAmount, NotACustomerAccount
from services.ledger.minting import credit_adjustment, grant, mint
from services.ledger.models import MovementKind, Rail, TransactionKind
from services.ledger.system_accounts import SystemAccount, system_account_id, usdc_funding_code
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
    table_counts,
    transaction_of,
    violations,
)


def test_mint_creates_a_lot_with_its_provenance(engine):
    account_id = new_account(engine)

    result = mint_card(engine, account_id, 2_500, ref="cs_test_provenance")

    lot = lot_row(engine, result.lot_id)
    assert (lot.account_id, lot.rail, lot.external_ref) == (account_id, Rail.CARD, "cs_test_provenance")
    assert (lot.credits, lot.remaining_credits, lot.reserved_credits) == (2_500, 2_500, 0)
    assert lot.cost_basis_cents == 2_500
    assert lot.promotional is False
    assert lot.credited_at == T0
    assert lot.mint_transaction_id == result.transaction_id
    assert result.replayed is False
    assert violations(engine) == []


def test_mint_posts_a_balanced_journal_transaction_from_the_funding_account(engine):
    account_id = new_account(engine)

    result = mint_card(engine, account_id, 2_500)

    assert entries_of(engine, result.transaction_id) == {SystemAccount.FUNDING_CARD: -2_500, account_id: 2_500}
    txn = transaction_of(engine, result.transaction_id)
    assert txn.kind == TransactionKind.MINT
    assert txn.account_id == account_id
    assert txn.created_at == T0
    assert movements_of(engine, result.transaction_id) == [(result.lot_id, MovementKind.MINT, 2_500)]
    assert ledger_balance(engine, account_id) == 2_500
    assert balance_of(engine, account_id).available_credits == 2_500


def test_lot_expires_twelve_calendar_months_after_it_is_credited_at_the_same_time_of_day(engine):
    account_id = new_account(engine)
    credited_at = datetime(2025, 3, 10, 14, 15, 16, 123456, tzinfo=UTC)

    result = mint_card(engine, account_id, 100, at=credited_at)

    expected = datetime(2026, 3, 10, 14, 15, 16, 123456, tzinfo=UTC)
    assert result.expires_at == expected
    assert lot_row(engine, result.lot_id).expires_at == expected


def test_lot_credited_on_29_february_expires_on_28_february(engine):
    account_id = new_account(engine)

    result = mint_card(engine, account_id, 100, at=datetime(2024, 2, 29, 18, 30, tzinfo=UTC))

    assert lot_row(engine, result.lot_id).expires_at == datetime(2025, 2, 28, 18, 30, tzinfo=UTC)


def test_lot_credited_on_the_last_day_of_a_month_expires_on_the_same_day(engine):
    account_id = new_account(engine)

    result = mint_card(engine, account_id, 100, at=datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC))

    assert lot_row(engine, result.lot_id).expires_at == datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)


def test_mint_twice_by_the_same_external_reference_mints_once(engine):
    account_id = new_account(engine)
    first = mint_card(engine, account_id, 700, ref="pi_test_once")
    before = snapshot(engine)

    again = mint_card(engine, account_id, 700, ref="pi_test_once", at=T0 + timedelta(hours=1))

    assert again.replayed is True
    assert (again.lot_id, again.transaction_id, again.amount_credits) == (
        first.lot_id,
        first.transaction_id,
        first.amount_credits,
    )
    assert again.expires_at == first.expires_at
    assert snapshot(engine) == before
    assert ledger_balance(engine, account_id) == 700


def test_same_external_reference_with_another_amount_is_refused(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 700, ref="pi_test_amount")
    before = table_counts(engine)

    with pytest.raises(IdempotencyKeyReused):
        mint_card(engine, account_id, 800, ref="pi_test_amount")

    assert table_counts(engine) == before


def test_same_external_reference_for_another_account_is_refused(engine):
    first, second = new_account(engine, "first"), new_account(engine, "second")
    mint_card(engine, first, 700, ref="pi_test_account")
    before = table_counts(engine)

    with pytest.raises(IdempotencyKeyReused):
        mint_card(engine, second, 700, ref="pi_test_account")

    assert table_counts(engine) == before
    assert ledger_balance(engine, second) == 0


def test_same_reference_on_another_rail_is_another_payment(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100, ref="shared-ref")

    with unit_of_work(engine) as session:
        usdc_funding = system_account_id(session, usdc_funding_code(8453))
        other = mint(
            session,
            account_id=account_id,
            amount_credits=100,
            rail=Rail.USDC,
            external_ref="shared-ref",
            funding_account_id=usdc_funding,
            credited_at=T0,
        )

    assert other.replayed is False
    assert ledger_balance(engine, account_id) == 200


def test_usdc_mint_is_funded_by_the_chain_funding_account_and_keeps_its_cost_basis(engine):
    account_id = new_account(engine)

    with unit_of_work(engine) as session:
        usdc_funding = system_account_id(session, usdc_funding_code(8453))
        result = mint(
            session,
            account_id=account_id,
            amount_credits=1_234,
            rail=Rail.USDC,
            external_ref="8453:0xabc:7",
            funding_account_id=usdc_funding,
            cost_basis_usdc_units=12_345_678,
            credited_at=T0,
        )

    assert entries_of(engine, result.transaction_id) == {usdc_funding: -1_234, account_id: 1_234}
    lot = lot_row(engine, result.lot_id)
    assert (lot.cost_basis_usdc_units, lot.cost_basis_cents) == (12_345_678, None)
    assert violations(engine) == []


def test_chain_funding_account_is_created_once(engine):
    with unit_of_work(engine) as session:
        first = system_account_id(session, usdc_funding_code(10))
    with unit_of_work(engine) as session:
        again = system_account_id(session, usdc_funding_code(10))

    assert first == again


def test_grant_is_a_promotional_lot_funded_by_promotions_with_its_own_expiry(engine):
    account_id = new_account(engine)
    expires_at = T0 + timedelta(days=30)

    result = grant_credits(engine, account_id, 300, expires_at=expires_at)

    lot = lot_row(engine, result.lot_id)
    assert lot.promotional is True
    assert lot.rail == Rail.GRANT
    assert lot.expires_at == expires_at
    assert transaction_of(engine, result.transaction_id).kind == TransactionKind.GRANT
    assert entries_of(engine, result.transaction_id) == {SystemAccount.PROMOTIONS: -300, account_id: 300}


def test_grant_without_expiry_lasts_twelve_months(engine):
    account_id = new_account(engine)

    result = grant_credits(engine, account_id, 300)

    assert result.expires_at == datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def test_grant_replays_by_its_idempotency_key(engine):
    account_id = new_account(engine)

    with unit_of_work(engine) as session:
        first = grant(session, account_id=account_id, amount_credits=300, idempotency_key="welcome", now=T0)
    with unit_of_work(engine) as session:
        again = grant(session, account_id=account_id, amount_credits=300, idempotency_key="welcome", now=T0)

    assert again.replayed is True
    assert again.lot_id == first.lot_id
    assert ledger_balance(engine, account_id) == 300


def test_lot_that_would_expire_before_it_is_credited_is_refused(engine):
    account_id = new_account(engine)
    before = table_counts(engine)

    with pytest.raises(InvalidRequest):
        grant_credits(engine, account_id, 300, expires_at=T0)

    assert table_counts(engine) == before


def test_credit_adjustment_is_a_lot_funded_by_adjustments_and_needs_a_reason(engine):
    account_id = new_account(engine)

    with unit_of_work(engine) as session:
        result = credit_adjustment(
            session,
            account_id=account_id,
            amount_credits=50,
            idempotency_key="ticket-1",
            reason="goodwill",
            actor="admin@example.com",
            now=T0,
        )
    with pytest.raises(InvalidRequest), unit_of_work(engine) as session:
        credit_adjustment(
            session, account_id=account_id, amount_credits=50, idempotency_key="ticket-2", reason=" ", actor="a"
        )

    assert entries_of(engine, result.transaction_id) == {SystemAccount.ADJUSTMENTS: -50, account_id: 50}
    assert lot_row(engine, result.lot_id).promotional is False
    assert ledger_balance(engine, account_id) == 50


def test_mint_needs_an_external_reference(engine):
    account_id = new_account(engine)

    with pytest.raises(InvalidRequest), unit_of_work(engine) as session:
        mint(
            session,
            account_id=account_id,
            amount_credits=100,
            rail=Rail.CARD,
            external_ref="",
            funding_account_id=SystemAccount.FUNDING_CARD,
            credited_at=T0,
        )


def test_mint_to_an_unknown_account_is_refused(engine):
    with pytest.raises(AccountNotFound):
        mint_card(engine, 999_999, 100)


def test_mint_to_a_system_account_is_refused(engine):
    before = table_counts(engine)

    with pytest.raises(NotACustomerAccount):
        mint_card(engine, SystemAccount.REVENUE_USAGE, 100)

    assert table_counts(engine) == before


def test_mint_refuses_an_invalid_amount_and_writes_nothing(engine):
    account_id = new_account(engine)

    outcomes = refusals(engine, lambda amount: mint_card(engine, account_id, amount), bad_amounts())

    assert outcomes == dict.fromkeys(outcomes, InvalidAmount.code)


def test_mint_of_the_maximum_amount_is_accepted(engine):
    account_id = new_account(engine)
    maximum_credits = get_settings().max_amount_credits

    mint_card(engine, account_id, maximum_credits)

    assert ledger_balance(engine, account_id) == maximum_credits
