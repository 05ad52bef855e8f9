"""Row locks across connections, on PostgreSQL, with real threads (each with its own unit of work).

Threads start together on a Barrier and hand over with Events; nothing waits on a clock except a bounded join
that fails the test rather than hangs it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from services.core.db import unit_of_work
from services.ledger import repository as repo
from services.ledger.errors import HoldNotActive, InsufficientCredits
from services.ledger.expiry import expire_lots
from services.ledger.holds import HoldView, capture_hold, create_hold, expire_holds, release_hold
from services.ledger.minting import mint
from services.ledger.models import HoldStatus, Rail, TransactionKind
from services.ledger.spending import SpendResult, spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import (
    T0,
    balance_of,
    grant_credits,
    hold_row,
    ledger_balance,
    lot_row,
    mint_card,
    new_account,
    transactions_of_kind,
    violations,
)

pytestmark = pytest.mark.postgresql_only

# Bounds on how long a thread may take; reaching one fails the test.
JOIN_TIMEOUT_SECONDS = 60


def run_together(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(n)`` for n in range(workers) on as many threads, released at once; returns each outcome (the
    result, or the exception raised)."""
    barrier = threading.Barrier(workers, timeout=JOIN_TIMEOUT_SECONDS)

    def attempt(n: int) -> Any:
        barrier.wait()
        try:
            return work(n)
        except Exception as error:  # the caller counts the outcomes
            return error

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(attempt, n) for n in range(workers)]
        return [future.result(timeout=JOIN_TIMEOUT_SECONDS) for future in futures]


def test_concurrent_spends_from_one_account_never_overdraw(pg_engine):
    account_id = new_account(pg_engine)
    lots = [
        grant_credits(pg_engine, account_id, 300, expires_at=T0 + timedelta(days=30)),
        grant_credits(pg_engine, account_id, 300, expires_at=T0 + timedelta(days=60)),
        mint_card(pg_engine, account_id, 400),
    ]
    workers, spends_per_worker, spend_credits = 32, 2, 20  # 64 x 20 = 1,280 asked of 1,000

    def work(n: int) -> list[Any]:
        outcomes: list[Any] = []
        for attempt in range(spends_per_worker):
            try:
                with unit_of_work(pg_engine) as session:
                    outcomes.append(
                        spend(
                            session,
                            account_id=account_id,
                            amount_credits=spend_credits,
                            idempotency_key=f"worker-{n}-{attempt}",
                            now=T0 + timedelta(seconds=1),
                        )
                    )
            except InsufficientCredits as refused:
                outcomes.append(refused)
        return outcomes

    outcomes = [outcome for per_worker in run_together(workers, work) for outcome in per_worker]

    kinds = Counter(type(outcome).__name__ for outcome in outcomes)
    assert kinds == {"SpendResult": 50, "InsufficientCredits": 14}
    assert ledger_balance(pg_engine, account_id) == 0
    assert ledger_balance(pg_engine, SystemAccount.REVENUE_USAGE) == 1_000
    assert [lot_row(pg_engine, lot.lot_id).remaining_credits for lot in lots] == [0, 0, 0]
    assert len(transactions_of_kind(pg_engine, TransactionKind.SPEND)) == 50
    assert violations(pg_engine) == []


def test_concurrent_spends_and_holds_leave_exactly_what_was_not_taken(pg_engine):
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 1_000)
    workers = 16

    def work(n: int) -> Any:
        with unit_of_work(pg_engine) as session:
            if n % 2:
                return spend(session, account_id=account_id, amount_credits=45 + n, idempotency_key=f"s{n}", now=T0)
            held = create_hold(session, account_id=account_id, amount_credits=90 + n, idempotency_key=f"h{n}", now=T0)
        with unit_of_work(pg_engine) as session:
            return capture_hold(session, account_id=account_id, hold_id=held.id, amount_credits=30 + n, now=T0)

    outcomes = run_together(workers, work)

    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert all(isinstance(outcome, InsufficientCredits) for outcome in refused)
    spent_credits = sum(outcome.amount_credits for outcome in outcomes if isinstance(outcome, SpendResult))
    captured_credits = sum(outcome.captured_credits for outcome in outcomes if isinstance(outcome, HoldView))
    assert len(refused) + sum(isinstance(outcome, SpendResult | HoldView) for outcome in outcomes) == workers
    assert ledger_balance(pg_engine, account_id) == 1_000 - spent_credits - captured_credits
    assert balance_of(pg_engine, account_id).reserved_credits == 0
    assert violations(pg_engine) == []


@pytest.mark.parametrize("operation", ["spend", "mint", "hold"])
def test_concurrent_requests_with_one_idempotency_key_make_one_effect(pg_engine, operation):
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 1_000)
    workers = 10

    def work(_: int) -> Any:
        with unit_of_work(pg_engine) as session:
            if operation == "spend":
                result = spend(session, account_id=account_id, amount_credits=50, idempotency_key="once", now=T0)
                return result.transaction_id, result.replayed
            if operation == "mint":
                minted = mint(
                    session,
                    account_id=account_id,
                    amount_credits=50,
                    rail=Rail.CARD,
                    external_ref="cs_test_once",
                    funding_account_id=SystemAccount.FUNDING_CARD,
                    credited_at=T0,
                )
                return minted.lot_id, minted.replayed
            held = create_hold(session, account_id=account_id, amount_credits=50, idempotency_key="once", now=T0)
            return held.id, held.replayed

    outcomes = run_together(workers, work)

    assert [outcome for outcome in outcomes if isinstance(outcome, Exception)] == []
    assert len({made for made, _ in outcomes}) == 1
    assert sorted(replayed for _, replayed in outcomes) == [False] + [True] * (workers - 1)
    expected_ledger_credits, expected_available_credits = {
        "spend": (950, 950),
        "mint": (1_050, 1_050),
        "hold": (1_000, 950),
    }[operation]
    assert ledger_balance(pg_engine, account_id) == expected_ledger_credits
    assert balance_of(pg_engine, account_id).available_credits == expected_available_credits
    assert violations(pg_engine) == []


def test_one_customers_open_transaction_does_not_block_another_customer(pg_engine):
    busy, other = new_account(pg_engine, "busy"), new_account(pg_engine, "other")
    mint_card(pg_engine, busy, 100)
    mint_card(pg_engine, other, 100)
    locked, finish = threading.Event(), threading.Event()
    busy_outcome: list[Any] = []

    def hold_the_lock() -> None:
        try:
            with unit_of_work(pg_engine) as session:
                # A spend takes the busy customer's row lock and writes entries against the shared revenue account.
                spend(session, account_id=busy, amount_credits=10, idempotency_key="slow", now=T0)
                repo.lock_account(session, busy)
                locked.set()
                busy_outcome.append(finish.wait(JOIN_TIMEOUT_SECONDS))
        except Exception as error:
            busy_outcome.append(error)
            locked.set()

    other_outcome: list[Any] = []

    def spend_elsewhere() -> None:
        try:
            with unit_of_work(pg_engine) as session:
                other_outcome.append(
                    spend(session, account_id=other, amount_credits=30, idempotency_key="quick", now=T0)
                )
        except Exception as error:
            other_outcome.append(error)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(JOIN_TIMEOUT_SECONDS)
        assert busy_outcome == []
        spender = threading.Thread(target=spend_elsewhere)
        spender.start()
        spender.join(timeout=JOIN_TIMEOUT_SECONDS)

        assert not spender.is_alive()
        assert holder.is_alive()
        assert not finish.is_set()
        assert [type(outcome).__name__ for outcome in other_outcome] == ["SpendResult"]
    finally:
        finish.set()
        holder.join(timeout=JOIN_TIMEOUT_SECONDS)
    assert busy_outcome == [True]
    assert (ledger_balance(pg_engine, busy), ledger_balance(pg_engine, other)) == (90, 70)
    assert violations(pg_engine) == []


def spend_without_waiting(engine, account_id: int) -> None:
    with unit_of_work(engine) as session:
        session.execute(text("SET LOCAL lock_timeout = '1ms'"))
        spend(session, account_id=account_id, amount_credits=10, idempotency_key="blocked", now=T0)


def test_a_customers_operations_wait_for_the_customer_lock(pg_engine):
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 100)
    locked, finish = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with unit_of_work(pg_engine) as session:
            repo.lock_account(session, account_id)
            locked.set()
            finish.wait(JOIN_TIMEOUT_SECONDS)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(JOIN_TIMEOUT_SECONDS)
        # Refuse to wait at all, rather than time how long the spend waits.
        with pytest.raises(OperationalError, match="lock"):
            spend_without_waiting(pg_engine, account_id)
    finally:
        finish.set()
        holder.join(timeout=JOIN_TIMEOUT_SECONDS)
    assert not holder.is_alive()
    assert ledger_balance(pg_engine, account_id) == 100


def test_capture_racing_the_hold_expiry_job_resolves_the_hold_once(pg_engine):
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 100)
    with unit_of_work(pg_engine) as session:
        held = create_hold(
            session, account_id=account_id, amount_credits=60, idempotency_key="race", ttl_seconds=60, now=T0
        )

    def work(n: int) -> Any:
        with unit_of_work(pg_engine) as session:
            if n == 0:
                return capture_hold(
                    session,
                    account_id=account_id,
                    hold_id=held.id,
                    amount_credits=40,
                    now=held.expires_at - timedelta(seconds=1),
                )
            return expire_holds(session, now=held.expires_at)

    captured, expired_holds = run_together(2, work)

    status = hold_row(pg_engine, held.id).status
    if status == HoldStatus.CAPTURED:
        assert expired_holds == 0
        assert ledger_balance(pg_engine, account_id) == 60
    else:
        assert status == HoldStatus.EXPIRED
        assert isinstance(captured, HoldNotActive)
        assert expired_holds == 1
        assert ledger_balance(pg_engine, account_id) == 100
    assert balance_of(pg_engine, account_id).reserved_credits == 0
    assert violations(pg_engine) == []


def wait_until_blocked_by(engine: Any, holder_pid: int) -> None:
    """Until another session waits for a lock the backend ``holder_pid`` holds (or fail after the join bound)."""
    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    query = text("SELECT count(*) FROM pg_stat_activity WHERE CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"holder": holder_pid}).scalar_one():
                return
        threading.Event().wait(0.01)
    raise AssertionError("no session waited for the holder's lock")


@pytest.mark.parametrize("settle", ["capture", "release"])
def test_a_settlement_that_waited_for_the_lock_sees_the_hold_as_the_holder_left_it(pg_engine, settle):
    """The hold is released while a capture or release waits for the account: once it has the lock it finds the
    hold released, charges nothing and changes nothing."""
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 100)
    with unit_of_work(pg_engine) as session:
        held = create_hold(session, account_id=account_id, amount_credits=60, idempotency_key="wait", now=T0)
    released, commit = threading.Event(), threading.Event()
    holder: dict[str, Any] = {}

    def release_and_keep_the_lock() -> None:
        with unit_of_work(pg_engine) as session:
            holder["pid"] = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            release_hold(session, account_id=account_id, hold_id=held.id, now=T0)
            released.set()
            commit.wait(JOIN_TIMEOUT_SECONDS)

    def settle_after_waiting() -> None:
        try:
            with unit_of_work(pg_engine) as session:
                if settle == "capture":
                    capture_hold(session, account_id=account_id, hold_id=held.id, amount_credits=40, now=T0)
                else:
                    release_hold(session, account_id=account_id, hold_id=held.id, now=T0)
        except HoldNotActive as refused:
            holder["refused"] = refused

    first = threading.Thread(target=release_and_keep_the_lock)
    first.start()
    try:
        assert released.wait(JOIN_TIMEOUT_SECONDS)
        second = threading.Thread(target=settle_after_waiting)
        second.start()
        wait_until_blocked_by(pg_engine, holder["pid"])
    finally:
        commit.set()
        first.join(timeout=JOIN_TIMEOUT_SECONDS)
    second.join(timeout=JOIN_TIMEOUT_SECONDS)
    assert not first.is_alive()
    assert not second.is_alive()

    assert holder["refused"].to_dict()["details"]["status"] == HoldStatus.RELEASED
    assert hold_row(pg_engine, held.id).status == HoldStatus.RELEASED
    assert ledger_balance(pg_engine, account_id) == 100
    assert balance_of(pg_engine, account_id).reserved_credits == 0
    assert transactions_of_kind(pg_engine, TransactionKind.CAPTURE) == []
    assert violations(pg_engine) == []


def test_expiry_job_racing_spends_expires_only_what_was_not_spent(pg_engine):
    accounts = [new_account(pg_engine, f"customer {n}") for n in range(4)]
    due_at = T0 + timedelta(days=1)
    for account_id in accounts:
        grant_credits(pg_engine, account_id, 100, expires_at=due_at)
        mint_card(pg_engine, account_id, 100)

    def work(n: int) -> Any:
        with unit_of_work(pg_engine) as session:
            if n < len(accounts):
                # Spent just before the lots' time: drawn from the expiring grant first.
                return spend(
                    session,
                    account_id=accounts[n],
                    amount_credits=30,
                    idempotency_key="before-expiry",
                    now=due_at - timedelta(seconds=1),
                )
            return expire_lots(session, now=due_at)

    outcomes = run_together(len(accounts) + 1, work)

    assert [outcome for outcome in outcomes if isinstance(outcome, Exception)] == []
    with unit_of_work(pg_engine) as session:
        expire_lots(session, now=due_at)  # whatever the race left due
    for account_id in accounts:
        # Spent first: 30 of the grant spent, its other 70 expired. Expired first: the whole grant expired, and the
        # spend drew from the card lot.
        outcome = (ledger_balance(pg_engine, account_id), ledger_expired(pg_engine, account_id))
        assert outcome in {(100, 70), (70, 100)}
    assert ledger_balance(pg_engine, SystemAccount.BREAKAGE) == sum(
        ledger_expired(pg_engine, account_id) for account_id in accounts
    )
    assert ledger_balance(pg_engine, SystemAccount.REVENUE_USAGE) == 30 * len(accounts)
    assert violations(pg_engine) == []


def ledger_expired(engine, account_id: int) -> int:
    """Credits of the account's lots that went to breakage."""
    lots = repo.lots
    with unit_of_work(engine) as session:
        total = session.execute(
            select(func.coalesce(func.sum(lots.c.expired_credits), 0)).where(lots.c.account_id == account_id)
        ).scalar_one()
        return int(total)
