import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from services.core.db import unit_of_work
from services.ledger import repository as repo
from services.ledger import store
from services.ledger.balance import list_transactions
from services.ledger.clawback import clawback, reinstate
from services.ledger.errors import InsufficientCredits
from services.ledger.expiry import ExpiryBatch, expire_lots
from services.ledger.holds import create_hold
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.plans import EXPIRY_KEY_PREFIX, expiry_key
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


def lots_of(engine: Engine, *account_ids: int) -> list[Any]:
    with unit_of_work(engine) as session:
        lots = repo.lots
        return list(session.execute(select(lots).where(lots.c.account_id.in_(account_ids)).order_by(lots.c.id)).all())


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
    assert expiry.id == batch.transaction_id
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


def test_a_batch_posts_one_transaction_with_an_entry_per_account_and_one_for_breakage(engine):
    first, second = new_account(engine, "first"), new_account(engine, "second")
    due_at = T0 + timedelta(days=10)
    for account_id in (first, second):
        grant_credits(engine, account_id, 10, expires_at=due_at)
        grant_credits(engine, account_id, 20, expires_at=due_at - timedelta(days=1))
    lasting = mint_card(engine, first, 500)

    batch = run_expiry(engine, due_at)

    assert (batch.lots_expired, batch.credits_expired, batch.accounts) == (4, 60, 2)
    [expiry] = transactions_of_kind(engine, TransactionKind.EXPIRY)
    assert expiry.account_id is None  # it concerns several customers; each has its own entry
    assert entries_of(engine, expiry.id) == {first: -30, second: -30, SystemAccount.BREAKAGE: 60}
    assert sorted(lot_id for lot_id, _, _ in movements_of(engine, expiry.id)) == sorted(
        row.id for row in lots_of(engine, first, second) if row.id != lasting.lot_id
    )
    assert lot_row(engine, lasting.lot_id).remaining_credits == 500
    assert (ledger_balance(engine, first), ledger_balance(engine, second)) == (500, 0)
    assert violations(engine) == []


def test_each_customer_sees_only_its_own_share_of_a_batch_in_its_history(engine):
    first, second = new_account(engine, "first"), new_account(engine, "second")
    due_at = T0 + timedelta(days=10)
    grant_credits(engine, first, 10, expires_at=due_at)
    grant_credits(engine, second, 25, expires_at=due_at)

    batch = run_expiry(engine, due_at)

    with unit_of_work(engine) as session:
        seen = {
            account_id: [
                (row.id, row.kind, row.amount_credits, row.details)
                for row in list_transactions(session, account_id, kind=TransactionKind.EXPIRY)
            ]
            for account_id in (first, second)
        }
    assert seen == {
        first: [(batch.transaction_id, TransactionKind.EXPIRY, -10, {})],
        second: [(batch.transaction_id, TransactionKind.EXPIRY, -25, {})],
    }


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


def test_a_batch_takes_every_due_lot_of_the_accounts_it_reaches_together(engine):
    first, second = new_account(engine, "first"), new_account(engine, "second")
    grant_credits(engine, first, 10, expires_at=T0 + timedelta(days=1))
    grant_credits(engine, second, 20, expires_at=T0 + timedelta(days=2))
    grant_credits(engine, first, 30, expires_at=T0 + timedelta(days=3))

    one = run_expiry(engine, T0 + timedelta(days=5), limit=2)
    two = run_expiry(engine, T0 + timedelta(days=5), limit=2)

    # The soonest lot's account first, with all of its due lots: one entry for both of them.
    assert (one.lots_expired, one.credits_expired, one.accounts) == (2, 40, 1)
    assert one.transaction_id is not None
    assert entries_of(engine, one.transaction_id) == {first: -40, SystemAccount.BREAKAGE: 40}
    assert (two.lots_expired, two.credits_expired, two.accounts, two.lots_examined) == (1, 20, 1, 1)
    assert violations(engine) == []


def test_a_batch_never_takes_more_than_its_limit_even_of_one_account(engine):
    account_id = new_account(engine)
    for days in range(1, 6):
        grant_credits(engine, account_id, days, expires_at=T0 + timedelta(days=days))

    batches = [run_expiry(engine, T0 + timedelta(days=10), limit=2) for _ in range(4)]

    assert [(b.lots_expired, b.credits_expired, b.lots_examined) for b in batches] == [
        (2, 1 + 2, 2),
        (2, 3 + 4, 2),
        (1, 5, 1),
        (0, 0, 0),
    ]
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


# --- idempotency: a batch that did not commit left nothing, and an expiry is never posted twice ------------------


class Crash(Exception):
    pass


def test_a_batch_rolled_back_before_its_commit_is_redone_whole_under_the_same_key(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    spend_credits(engine, account_id, 30, key="before-expiry")
    expected_key = expiry_key([(lot.lot_id, 70, 0)])
    before = snapshot(engine)

    def expire_then_crash() -> None:
        with unit_of_work(engine) as session:
            crashed = expire_lots(session, now=lot.expires_at)
            assert crashed.lots_expired == 1
            raise Crash

    with pytest.raises(Crash):
        expire_then_crash()
    assert snapshot(engine) == before
    batch = run_expiry(engine, lot.expires_at + timedelta(minutes=1))
    assert (batch.lots_expired, batch.credits_expired) == (1, 70)
    [posted] = transactions_of_kind(engine, TransactionKind.EXPIRY)
    assert posted.idempotency_key == expected_key
    assert run_expiry(engine, lot.expires_at + timedelta(minutes=2)).lots_expired == 0
    assert violations(engine) == []


def test_the_same_expiry_can_never_be_posted_twice(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    key = expiry_key([(lot.lot_id, 100, 0)])
    # As if the same batch had been posted already (its transaction committed without its lot changes).
    with unit_of_work(engine) as session:
        repo.insert_transaction(
            session,
            kind=TransactionKind.EXPIRY,
            idempotency_key=key,
            account_id=None,
            created_at=lot.expires_at,
            legs=[(account_id, -1), (SystemAccount.BREAKAGE, 1)],
        )
    before = snapshot(engine)

    with pytest.raises(IntegrityError):
        run_expiry(engine, lot.expires_at)

    assert snapshot(engine) == before


def test_credits_reinstated_on_an_expired_lot_expire_at_once_under_a_key_of_their_own(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    at = lot.expires_at
    run_expiry(engine, at)
    with unit_of_work(engine) as session:
        clawback(session, lot_id=lot.lot_id, amount_credits=100, idempotency_key="cb", reason="refund", now=at)
        reinstate(session, lot_id=lot.lot_id, amount_credits=100, idempotency_key="rs", reason="won", now=at)

    assert ledger_balance(engine, account_id) == 0
    assert run_expiry(engine, at).lots_expired == 0  # the job took this lot's remainder once, and only once
    keys = [txn.idempotency_key for txn in transactions_of_kind(engine, TransactionKind.EXPIRY)]
    assert len(keys) == len(set(keys)) == 2
    assert keys[0].startswith(EXPIRY_KEY_PREFIX)
    assert keys[1] == "expiry:reinstatement:rs"
    assert violations(engine) == []


# --- the PostgreSQL batch: one statement, never waiting for a customer -----------------------------------------


@contextmanager
def account_locked(engine: Engine, account_id: int) -> Iterator[None]:
    """The account's row locked as a spend locks it, on a connection of its own, for the block's duration."""
    with engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT id FROM accounts WHERE id = :a FOR UPDATE"), {"a": account_id})
        yield


def test_a_batch_passes_over_a_busy_account_without_waiting_and_a_later_one_takes_its_lots(pg_engine):
    busy, free = new_account(pg_engine, "busy"), new_account(pg_engine, "free")
    due_at = T0 + timedelta(days=10)
    for account_id in (busy, free):
        grant_credits(pg_engine, account_id, 10, expires_at=due_at)
        grant_credits(pg_engine, account_id, 20, expires_at=due_at - timedelta(days=1))

    with account_locked(pg_engine, busy), unit_of_work(pg_engine) as session:
        session.execute(text("SET LOCAL lock_timeout = '5s'"))  # waiting would fail the test rather than hang it
        passed_over = expire_lots(session, now=due_at)
    taken = run_expiry(pg_engine, due_at)

    assert (passed_over.lots_expired, passed_over.credits_expired, passed_over.accounts) == (2, 30, 1)
    assert passed_over.lots_examined == 4  # a full batch: the job goes on to the next one
    assert (taken.lots_expired, taken.credits_expired, taken.accounts) == (2, 30, 1)
    assert (ledger_balance(pg_engine, busy), ledger_balance(pg_engine, free)) == (0, 0)
    assert violations(pg_engine) == []


def test_a_batch_that_waited_for_a_busy_account_expires_what_its_holder_left(pg_engine):
    account_id = new_account(pg_engine)
    due_at = T0 + timedelta(days=1)
    lot = grant_credits(pg_engine, account_id, 10, expires_at=due_at)
    batches: list[ExpiryBatch] = []

    with pg_engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT id FROM accounts WHERE id = :a FOR UPDATE"), {"a": account_id})
        expirer = threading.Thread(target=lambda: batches.append(run_expiry(pg_engine, due_at)))
        expirer.start()  # picks the lot, finds its only account busy, and waits for it
        wait_until_blocked(pg_engine)
        # What a hold made meanwhile does to the lot (the holder of the lock commits it)
        holder.execute(text("UPDATE lots SET reserved_credits = 3 WHERE id = :lot"), {"lot": lot.lot_id})
    expirer.join(timeout=30)

    [batch] = batches
    assert (batch.lots_expired, batch.credits_expired) == (1, 7)  # read again once the lock was granted
    assert batch.transaction_id is not None
    assert movements_of(pg_engine, batch.transaction_id) == [(lot.lot_id, MovementKind.EXPIRY, -7)]


def wait_until_blocked(engine: Engine, seconds: float = 30.0) -> None:
    """Until another session of the database waits for a lock (or fail after ``seconds``)."""
    deadline = time.monotonic() + seconds
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        threading.Event().wait(0.01)
    raise AssertionError("no session waited for a lock")


def expiry_rows(engine: Engine) -> dict[str, list[Any]]:
    """What expiry wrote and the lots it changed (a database reset restarts the ids, so they compare too)."""
    t, e, m, lots = repo.transactions, repo.entries, repo.movements, repo.lots
    expiries = select(t.c.id).where(t.c.kind == TransactionKind.EXPIRY)
    with unit_of_work(engine) as session:
        return {
            "transactions": [
                tuple(row)
                for row in session.execute(
                    select(t.c.id, t.c.idempotency_key, t.c.account_id, t.c.created_at, t.c.details)
                    .where(t.c.kind == TransactionKind.EXPIRY)
                    .order_by(t.c.id)
                )
            ],
            "entries": sorted(
                tuple(row)
                for row in session.execute(
                    select(e.c.transaction_id, e.c.account_id, e.c.amount_credits, e.c.created_at).where(
                        e.c.transaction_id.in_(expiries)
                    )
                )
            ),
            "movements": [
                tuple(row)
                for row in session.execute(
                    select(m.c.id, m.c.lot_id, m.c.transaction_id, m.c.kind, m.c.amount_credits, m.c.created_at)
                    .where(m.c.transaction_id.in_(expiries))
                    .order_by(m.c.id)
                )
            ],
            "lots": [
                tuple(row)
                for row in session.execute(
                    select(
                        lots.c.id, lots.c.remaining_credits, lots.c.reserved_credits, lots.c.expired_credits
                    ).order_by(lots.c.id)
                )
            ],
        }


def seed_mixed_lots(engine: Engine) -> datetime:
    """Three accounts with lots due at different times, spent in part, one reserved in part, and a lot not yet due;
    returns when the batches run."""
    accounts = [new_account(engine, f"customer {n}") for n in range(3)]
    for n, account_id in enumerate(accounts):
        for days in (3, 1, 2):
            grant_credits(engine, account_id, 10 * (n + days), expires_at=T0 + timedelta(days=days))
        mint_card(engine, account_id, 100)
        spend_credits(engine, account_id, 5 + n, key=f"spend-{n}")
    with unit_of_work(engine) as session:
        create_hold(session, account_id=accounts[0], amount_credits=12, idempotency_key="held", ttl_seconds=60, now=T0)
    return T0 + timedelta(days=30)


def expire_all(engine: Engine, now: datetime, limit: int) -> list[tuple[int, int, int, int]]:
    done = []
    while True:
        batch = run_expiry(engine, now, limit)
        done.append((batch.lots_expired, batch.credits_expired, batch.accounts, batch.lots_examined))
        if batch.lots_examined < limit:
            return done


@pytest.mark.parametrize("limit", [2, 5_000])
def test_the_postgresql_store_expires_exactly_what_the_core_store_does(pg_engine, limit, request, monkeypatch):
    due_at = seed_mixed_lots(pg_engine)
    with monkeypatch.context() as patched:
        patched.setattr(store, "driver_of", lambda session: None)
        portable = expire_all(pg_engine, due_at, limit)
    written_by_statements = expiry_rows(pg_engine)
    assert violations(pg_engine) == []

    request.getfixturevalue("postgres_database").reset()
    assert seed_mixed_lots(pg_engine) == due_at
    set_based = expire_all(pg_engine, due_at, limit)

    assert set_based == portable
    assert sum(lots for lots, *_ in set_based) == 8  # the ninth is wholly reserved
    assert expiry_rows(pg_engine) == written_by_statements
    assert violations(pg_engine) == []
