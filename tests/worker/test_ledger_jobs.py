"""The ledger's jobs against the ledger's own races: a hold captured while the expiry job releases it, and a lot
that expires while part of it is reserved."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger import repository as repo
from services.ledger.accounts import create_customer_account
from services.ledger.errors import HoldExpired, HoldNotActive
from services.ledger.holds import HoldView, capture_hold, create_hold, get_hold, release_hold
from services.ledger.invariants import check_invariants
from services.ledger.minting import mint
from services.ledger.models import HoldStatus, Rail
from services.ledger.system_accounts import SystemAccount
from services.ledger.tasks import expire_holds_batch, hold_expiry_job, lot_expiry_job
from services.worker.health import JobRun
from services.worker.models import RunOutcome
from services.worker.runner import run_job_once
from tests.worker.support import scalar

T0 = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
SETTINGS = Settings(environment="test", worker_hold_expiry_batch_size=4, worker_lot_expiry_batch_size=4)


def new_customer(engine: Engine, credits: int, *, at: datetime = T0, expires_at: datetime | None = None) -> int:
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="customer", now=at)
        mint(
            session,
            account_id=account_id,
            amount_credits=credits,
            rail=Rail.CARD,
            external_ref=f"cs_test_{account_id}",
            funding_account_id=SystemAccount.FUNDING_CARD,
            cost_basis_cents=credits,
            credited_at=at,
            expires_at=expires_at,
        )
    return account_id


def hold(engine: Engine, account_id: int, credits: int, *, at: datetime, ttl_seconds: int) -> HoldView:
    with unit_of_work(engine) as session:
        return create_hold(
            session,
            account_id=account_id,
            amount_credits=credits,
            idempotency_key=f"hold-{account_id}-{at.isoformat()}",
            ttl_seconds=ttl_seconds,
            now=at,
        )


def assert_invariants(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        assert check_invariants(session) == []


def balance(engine: Engine, account_id: int) -> int:
    return scalar(
        engine, "SELECT coalesce(sum(amount_credits), 0) FROM ledger_entries WHERE account_id = :a", a=account_id
    )


# --- a capture racing the hold-expiry job ---------------------------------------------------------------------


@pytest.mark.postgresql_only
def test_a_capture_racing_the_hold_expiry_job_either_wins_or_loses_whole(pg_engine: Engine) -> None:
    holds_count, held, captured_credits = 24, 100, 60
    accounts = [new_customer(pg_engine, 1_000) for _ in range(holds_count)]
    created = T0 + timedelta(minutes=1)
    holds = [hold(pg_engine, account_id, held, at=created, ttl_seconds=60) for account_id in accounts]
    expiry_moment = holds[0].expires_at
    # Most captures' clocks still see their hold alive while the job's sees it expired: both may act, one must
    # win. Every fourth capture's clock is a moment late (it may only fail, as HoldExpired or HoldNotActive).
    capture_moments = {
        view.id: expiry_moment + (timedelta(0) if n % 4 == 3 else -timedelta(milliseconds=1))
        for n, view in enumerate(holds)
    }

    start = threading.Barrier(holds_count + 1)
    outcomes: dict[int, object] = {}
    job_runs: list[object] = []

    def capture(view: HoldView) -> None:
        start.wait(30)
        try:
            with unit_of_work(pg_engine) as session:
                outcomes[view.id] = capture_hold(
                    session,
                    account_id=view.account_id,
                    hold_id=view.id,
                    amount_credits=captured_credits,
                    now=capture_moments[view.id],
                )
        except (HoldNotActive, HoldExpired) as exc:
            outcomes[view.id] = exc

    job = hold_expiry_job(SETTINGS)
    batches = itertools.count()

    def batch_at_the_start_line(session: Session, now: datetime, batch_size: int) -> int:
        if next(batches) == 0:
            start.wait(30)  # the job's first batch and every capture set off together
        return expire_holds_batch(session, now, batch_size)

    def expire() -> None:
        spec = replace(job, batch=batch_at_the_start_line, batch_size=8)
        job_runs.append(run_job_once(pg_engine, spec, now=expiry_moment))

    threads = [threading.Thread(target=capture, args=(view,)) for view in holds]
    threads.append(threading.Thread(target=expire))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)

    [job_run] = job_runs
    assert getattr(job_run, "outcome", None) == RunOutcome.SUCCESS
    won = [hold_id for hold_id, result in outcomes.items() if isinstance(result, HoldView)]
    lost = [hold_id for hold_id, result in outcomes.items() if isinstance(result, Exception)]
    assert len(outcomes) == holds_count
    assert len(won) + len(lost) == holds_count
    assert not set(won) & {hold_id for hold_id, moment in capture_moments.items() if moment >= expiry_moment}
    with unit_of_work(pg_engine) as session:
        status = {view.id: get_hold(session, account_id=None, hold_id=view.id).status for view in holds}
    # Exactly one side won each hold: a capture that returned left it captured, one that failed left it expired.
    assert all(status[hold_id] == HoldStatus.CAPTURED for hold_id in won)
    assert all(status[hold_id] == HoldStatus.EXPIRED for hold_id in lost)
    # The job counts the holds it examined (a hold captured while it waited for the lock is examined, not expired).
    assert len(lost) <= getattr(job_run, "items", 0) <= holds_count
    # And the credits add up.
    assert balance(pg_engine, SystemAccount.REVENUE_USAGE) == captured_credits * len(won)
    for view in holds:
        expected = 1_000 - (captured_credits if view.id in won else 0)
        assert balance(pg_engine, view.account_id) == expected
    assert scalar(pg_engine, "SELECT coalesce(sum(reserved_credits), 0) FROM lots") == 0
    assert_invariants(pg_engine)


# --- a lot that expires while part of it is reserved ---------------------------------------------------------


LOT_CREDITS, HELD = 1_000, 300
EXPIRES = T0 + timedelta(days=365)


def lot_of(engine: Engine, account_id: int):
    with unit_of_work(engine) as session:
        return session.execute(repo.lots.select().where(repo.lots.c.account_id == account_id)).one()


def expiry_movements_of(engine: Engine, lot_id: int) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            repo.movements.select()
            .where(repo.movements.c.lot_id == lot_id, repo.movements.c.kind == "expiry")
            .order_by(repo.movements.c.id)
        ).all()
    return [row.amount_credits for row in rows]


@pytest.fixture
def partly_reserved_lot(engine: Engine) -> tuple[int, HoldView]:
    """A lot of 1,000 credits, 300 of them held since an hour before it expired; the lot-expiry job has run."""
    account_id = new_customer(engine, LOT_CREDITS, expires_at=EXPIRES)
    view = hold(engine, account_id, HELD, at=EXPIRES - timedelta(hours=1), ttl_seconds=2 * 3600)

    run = run_job_once(engine, lot_expiry_job(SETTINGS), now=EXPIRES + timedelta(minutes=1))

    assert (run.outcome, run.items) == (RunOutcome.SUCCESS, 1)
    lot = lot_of(engine, account_id)
    # The unreserved part expired now; the reserved part waits for its hold.
    assert (lot.remaining_credits, lot.reserved_credits, lot.expired_credits) == (HELD, HELD, LOT_CREDITS - HELD)
    assert expiry_movements_of(engine, lot.id) == [-(LOT_CREDITS - HELD)]
    assert balance(engine, account_id) == HELD
    again = run_job_once(engine, lot_expiry_job(SETTINGS), now=EXPIRES + timedelta(minutes=2))
    assert again.items == 0
    assert_invariants(engine)
    return account_id, view


def test_capturing_a_hold_on_an_expired_lot_spends_the_capture_and_expires_the_rest(
    engine: Engine, partly_reserved_lot: tuple[int, HoldView]
) -> None:
    account_id, view = partly_reserved_lot
    with unit_of_work(engine) as session:
        capture_hold(
            session, account_id=account_id, hold_id=view.id, amount_credits=100, now=EXPIRES + timedelta(minutes=5)
        )

    lot = lot_of(engine, account_id)
    assert (lot.remaining_credits, lot.reserved_credits, lot.expired_credits) == (0, 0, LOT_CREDITS - 100)
    assert expiry_movements_of(engine, lot.id) == [-(LOT_CREDITS - HELD), -(HELD - 100)]
    assert balance(engine, SystemAccount.REVENUE_USAGE) == 100
    assert balance(engine, SystemAccount.BREAKAGE) == LOT_CREDITS - 100
    assert balance(engine, account_id) == 0
    assert run_job_once(engine, lot_expiry_job(SETTINGS), now=EXPIRES + timedelta(hours=3)).items == 0
    assert_invariants(engine)


def test_releasing_a_hold_on_an_expired_lot_expires_what_it_held_at_once(
    engine: Engine, partly_reserved_lot: tuple[int, HoldView]
) -> None:
    account_id, view = partly_reserved_lot
    with unit_of_work(engine) as session:
        release_hold(session, account_id=account_id, hold_id=view.id, now=EXPIRES + timedelta(minutes=5))

    lot = lot_of(engine, account_id)
    assert (lot.remaining_credits, lot.reserved_credits, lot.expired_credits) == (0, 0, LOT_CREDITS)
    assert expiry_movements_of(engine, lot.id) == [-(LOT_CREDITS - HELD), -HELD]
    assert balance(engine, SystemAccount.BREAKAGE) == LOT_CREDITS
    assert balance(engine, account_id) == 0
    assert_invariants(engine)


def test_the_hold_expiry_job_releasing_a_hold_on_an_expired_lot_expires_what_it_held(
    engine: Engine, partly_reserved_lot: tuple[int, HoldView]
) -> None:
    account_id, view = partly_reserved_lot

    run = run_job_once(engine, hold_expiry_job(SETTINGS), now=view.expires_at + timedelta(seconds=1))

    assert (run.outcome, run.items) == (RunOutcome.SUCCESS, 1)
    lot = lot_of(engine, account_id)
    assert (lot.remaining_credits, lot.reserved_credits, lot.expired_credits) == (0, 0, LOT_CREDITS)
    assert expiry_movements_of(engine, lot.id) == [-(LOT_CREDITS - HELD), -HELD]
    assert balance(engine, account_id) == 0
    with unit_of_work(engine) as session:
        assert get_hold(session, account_id=None, hold_id=view.id).status == HoldStatus.EXPIRED
    assert_invariants(engine)


# --- a customer busy while the lot-expiry job runs -------------------------------------------------------------------


@pytest.mark.postgresql_only
def test_the_lot_expiry_job_passes_over_a_busy_account_and_a_later_run_takes_its_lots(pg_engine: Engine) -> None:
    due_at = T0 + timedelta(days=365)
    busy, *others = [new_customer(pg_engine, 100, expires_at=due_at) for _ in range(9)]  # busy's lot comes first
    job = lot_expiry_job(SETTINGS)  # batches of 4
    runs: list[JobRun] = []

    def run_in_thread() -> threading.Thread:
        thread = threading.Thread(target=lambda: runs.append(run_job_once(pg_engine, job, now=due_at)))
        thread.start()
        return thread

    with pg_engine.connect() as spender:
        with spender.begin():
            spender.execute(text("SELECT id FROM accounts WHERE id = :a FOR UPDATE"), {"a": busy})  # as a spend does
            # The first run expires every other lot without waiting for the busy account (in a thread, so that a
            # run waiting for it would fail the test rather than hang it).
            first = run_in_thread()
            first.join(30)
            assert not first.is_alive(), "the run waited for the busy account"
            assert (balance(pg_engine, busy), [balance(pg_engine, a) for a in others]) == (100, [0] * 8)
            # With nothing else left to do, the next run waits for it rather than pick the same lot again and again.
            second = run_in_thread()
            second.join(0.5)
            assert second.is_alive()
        second.join(30)
    assert not second.is_alive()

    assert [(run.outcome, run.items) for run in runs] == [
        (RunOutcome.SUCCESS, 4 + 4 + 3),  # the busy account's lot was examined by each batch
        (RunOutcome.SUCCESS, 1),
    ]
    assert balance(pg_engine, busy) == 0
    assert balance(pg_engine, SystemAccount.BREAKAGE) == 900
    assert_invariants(pg_engine)
