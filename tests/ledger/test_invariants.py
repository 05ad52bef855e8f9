from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from services.core.db import unit_of_work
from services.ledger import repository as repo
from services.ledger.clawback import clawback, reinstate
from services.ledger.common import movement_row
from services.ledger.expiry import expire_lots
from services.ledger.holds import capture_hold, create_hold, expire_holds, release_hold
from services.ledger.invariants import check_invariants
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.plans import LotChange
from services.ledger.spending import spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import (
    T0,
    grant_credits,
    lot_row,
    mint_card,
    new_account,
    transactions_of_kind,
    violated,
    violations,
)


@pytest.fixture
def busy_ledger(engine):
    """Two customers after a bit of everything: mints, grants, spends, holds, expiry, clawback and reinstatement.

    Returns (first account, second account, a card lot of the first, the first's active hold)."""
    first, second = new_account(engine, "first"), new_account(engine, "second")
    card = mint_card(engine, first, 1_000)
    grant_credits(engine, first, 200, expires_at=T0 + timedelta(days=7))
    other = mint_card(engine, second, 500)
    with unit_of_work(engine) as session:
        spend(session, account_id=first, amount_credits=250, idempotency_key="s1", now=T0)
        captured = create_hold(session, account_id=first, amount_credits=100, idempotency_key="h1", now=T0)
        released = create_hold(session, account_id=second, amount_credits=50, idempotency_key="h2", now=T0)
        create_hold(session, account_id=second, amount_credits=40, idempotency_key="h3", ttl_seconds=60, now=T0)
        active = create_hold(
            session, account_id=first, amount_credits=30, idempotency_key="h4", ttl_seconds=3_600, now=T0
        )
    with unit_of_work(engine) as session:
        capture_hold(session, account_id=first, hold_id=captured.id, amount_credits=70, now=T0)
        release_hold(session, account_id=second, hold_id=released.id, now=T0)
        expire_holds(session, now=T0 + timedelta(seconds=60))
    with unit_of_work(engine) as session:
        expire_lots(session, now=T0 + timedelta(days=7))
    with unit_of_work(engine) as session:
        spend(session, account_id=second, amount_credits=400, idempotency_key="s2", now=T0 + timedelta(days=8))
        clawback(session, lot_id=other.lot_id, amount_credits=500, idempotency_key="c1", reason="refund", now=T0)
    with unit_of_work(engine) as session:
        reinstate(session, lot_id=other.lot_id, amount_credits=450, idempotency_key="r1", reason="won", now=T0)
    return first, second, card.lot_id, active.id


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with unit_of_work(engine) as session:
        session.execute(text(sql), params)


def test_no_violations_after_normal_operations(engine, busy_ledger):
    assert violations(engine) == []


def test_no_violations_in_an_empty_ledger(engine):
    assert violations(engine) == []


def test_unbalanced_transaction_is_reported(engine, busy_ledger):
    first, _, _, _ = busy_ledger
    with unit_of_work(engine) as session:
        txn_id = repo.insert_transaction(
            session,
            kind=TransactionKind.ADJUSTMENT,
            idempotency_key="injected:unbalanced",
            account_id=first,
            created_at=T0,
            legs=[(first, 10), (SystemAccount.ADJUSTMENTS, -7)],
        )

    found = violations(engine)

    assert {v.invariant for v in found} >= {"transaction_sums_to_zero", "accounts_sum_to_zero", "balance_matches_lots"}
    unbalanced = [v for v in found if v.invariant == "transaction_sums_to_zero"]
    assert [v.subject for v in unbalanced] == [f"transaction {txn_id}"]
    assert "sum 3" in unbalanced[0].detail


def test_transaction_with_a_single_entry_is_reported(engine, busy_ledger):
    with unit_of_work(engine) as session:
        repo.insert_transaction(
            session,
            kind=TransactionKind.ADJUSTMENT,
            idempotency_key="injected:one-leg",
            account_id=None,
            created_at=T0,
            legs=[(SystemAccount.ADJUSTMENTS, 5)],
        )

    assert violated(engine) >= {"transaction_sums_to_zero", "accounts_sum_to_zero"}


def test_transaction_without_entries_is_reported(engine, busy_ledger):
    with unit_of_work(engine) as session:
        [txn_id] = repo.insert_transactions(
            session,
            [
                {
                    "kind": TransactionKind.ADJUSTMENT,
                    "idempotency_key": "injected:empty",
                    "request_hash": None,
                    "account_id": None,
                    "created_at": T0,
                    "description": None,
                    "details": {},
                }
            ],
        )

    found = violations(engine)

    assert [(v.invariant, v.subject, v.detail) for v in found] == [
        ("transaction_sums_to_zero", f"transaction {txn_id}", "no entries")
    ]


def test_corrupted_lot_remaining_is_reported(engine, busy_ledger):
    _, _, lot_id, _ = busy_ledger

    execute(engine, "UPDATE lots SET remaining_credits = remaining_credits + 5 WHERE id = :id", id=lot_id)

    found = violations(engine)
    assert {v.invariant for v in found} == {"remaining_matches_movements", "balance_matches_lots"}
    assert f"lot {lot_id}" in {v.subject for v in found}


def test_reservation_not_backed_by_an_active_hold_is_reported(engine, busy_ledger):
    _, _, lot_id, _ = busy_ledger

    execute(engine, "UPDATE lots SET reserved_credits = reserved_credits + 1 WHERE id = :id", id=lot_id)

    assert violated(engine) == {"reserved_matches_holds"}


def test_hold_not_fully_allocated_is_reported(engine, busy_ledger):
    _, _, _, hold_id = busy_ledger

    execute(engine, "UPDATE holds SET amount_credits = amount_credits + 1 WHERE id = :id", id=hold_id)

    found = violations(engine)
    assert [(v.invariant, v.subject) for v in found] == [("hold_fully_allocated", f"hold {hold_id}")]


def test_breakage_not_matching_expired_lots_is_reported(engine, busy_ledger):
    _, _, lot_id, _ = busy_ledger

    execute(engine, "UPDATE lots SET expired_credits = expired_credits + 5 WHERE id = :id", id=lot_id)

    assert violated(engine) == {"breakage_matches_expired_lots"}


def test_debt_not_matching_the_ledger_is_reported(engine, busy_ledger):
    first, _, _, _ = busy_ledger

    execute(engine, "UPDATE accounts SET debt_credits = debt_credits + 5 WHERE id = :id", id=first)

    found = violations(engine)
    assert [(v.invariant, v.subject) for v in found] == [("balance_matches_lots", f"account {first}")]


def test_draw_from_an_expired_lot_is_reported(engine, busy_ledger):
    first, _, lot_id, _ = busy_ledger
    after_expiry = lot_row(engine, lot_id).expires_at + timedelta(seconds=1)
    with unit_of_work(engine) as session:
        txn_id = repo.insert_transaction(
            session,
            kind=TransactionKind.SPEND,
            idempotency_key="injected:late-spend",
            account_id=first,
            created_at=after_expiry,
            legs=[(first, -10), (SystemAccount.REVENUE_USAGE, 10)],
        )
        repo.change_lots(session, [LotChange(lot_id, remaining_credits=-10)])
        repo.insert_movements(session, [movement_row(lot_id, txn_id, MovementKind.SPEND, -10, after_expiry)])

    found = violations(engine)
    assert [(v.invariant, v.subject) for v in found] == [("no_draw_from_expired_lot", f"lot {lot_id}")]


def test_lot_sharing_another_lots_mint_transaction_is_reported(engine, busy_ledger):
    _, _, lot_id, _ = busy_ledger
    original = lot_row(engine, lot_id)
    with unit_of_work(engine) as session:
        copy = {key: value for key, value in original._mapping.items() if key != "id"}
        repo.insert_lot(
            session, copy | {"external_ref": "injected-copy", "remaining_credits": 0, "reserved_credits": 0}
        )

    found = violations(engine)
    assert ("mint_at_most_once", f"transaction {original.mint_transaction_id}") in {
        (v.invariant, v.subject) for v in found
    }


def test_a_lot_with_credits_left_that_would_never_expire_is_reported(engine, busy_ledger):
    _, _, lot_id, _ = busy_ledger
    execute(engine, "DELETE FROM lot_expiry_queue WHERE lot_id = :lot", lot=lot_id)

    found = violations(engine)
    assert [(v.invariant, v.subject) for v in found] == [("unreserved_lot_queued_for_expiry", f"lot {lot_id}")]


def test_a_lot_leaves_the_expiry_queue_once_its_time_is_dealt_with(engine):
    account_id = new_account(engine)
    spent = grant_credits(engine, account_id, 10, expires_at=T0 + timedelta(days=1))
    kept = grant_credits(engine, account_id, 20, expires_at=T0 + timedelta(days=2))
    with unit_of_work(engine) as session:
        spend(session, account_id=account_id, amount_credits=10, idempotency_key="s", now=T0)

    def queued() -> list[int]:
        with unit_of_work(engine) as session:
            return list(session.execute(text("SELECT lot_id FROM lot_expiry_queue ORDER BY lot_id")).scalars())

    assert queued() == [spent.lot_id, kept.lot_id]  # a spent lot stays until its time
    with unit_of_work(engine) as session:
        batch = expire_lots(session, now=T0 + timedelta(days=1))
    # Nothing left on the lot to expire: it leaves the queue without a transaction.
    assert (batch.lots_expired, batch.lots_examined, batch.transaction_id) == (0, 1, None)
    assert queued() == [kept.lot_id]
    with unit_of_work(engine) as session:
        assert expire_lots(session, now=T0 + timedelta(days=2)).lots_expired == 1
    assert queued() == []
    assert violations(engine) == []


def test_check_reports_at_most_the_limit_per_check(engine, busy_ledger):
    with unit_of_work(engine) as session:
        for n in range(3):
            repo.insert_transaction(
                session,
                kind=TransactionKind.ADJUSTMENT,
                idempotency_key=f"injected:{n}",
                account_id=None,
                created_at=T0,
                legs=[(SystemAccount.ADJUSTMENTS, 1), (SystemAccount.PROMOTIONS, 1)],
            )

    with unit_of_work(engine) as session:
        limited = check_invariants(session, limit=2)
    assert len([v for v in limited if v.invariant == "transaction_sums_to_zero"]) == 2
    assert len([v for v in violations(engine) if v.invariant == "transaction_sums_to_zero"]) == 3


IMMUTABLE_EDITS = [
    pytest.param("UPDATE ledger_transactions SET description = 'edited'", "ledger_transactions", id="update-txn"),
    pytest.param(
        "DELETE FROM ledger_transactions WHERE id = (SELECT MAX(id) FROM ledger_transactions)", "", id="del-txn"
    ),
    pytest.param("UPDATE ledger_entries SET amount_credits = amount_credits * 2", "ledger_entries", id="update-entry"),
    pytest.param("DELETE FROM ledger_entries", "ledger_entries", id="delete-entry"),
    pytest.param("UPDATE lot_movements SET amount_credits = 1", "lot_movements", id="update-movement"),
    pytest.param("DELETE FROM lot_movements", "lot_movements", id="delete-movement"),
]


@pytest.mark.parametrize(("statement", "table"), IMMUTABLE_EDITS)
def test_posted_journal_rows_cannot_be_edited_or_deleted(engine, busy_ledger, statement, table):
    table = table or "ledger_transactions"
    with unit_of_work(engine) as session:
        before = session.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()

    with pytest.raises(DBAPIError, match="immutable"):
        execute(engine, statement)

    with unit_of_work(engine) as session:
        assert session.execute(text(f"SELECT * FROM {table} ORDER BY id")).all() == before
    assert violations(engine) == []


def test_corrections_are_new_transactions(engine, busy_ledger):
    first, _, _, _ = busy_ledger
    spends_before = len(transactions_of_kind(engine, TransactionKind.SPEND))

    with unit_of_work(engine) as session:
        spend(session, account_id=first, amount_credits=1, idempotency_key="s3", now=T0 + timedelta(days=9))

    assert len(transactions_of_kind(engine, TransactionKind.SPEND)) == spends_before + 1
    assert violations(engine) == []
