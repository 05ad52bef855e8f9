"""Random sequences of ledger operations, checked against a model and against every invariant after each step.

Each example starts from an empty database with fresh customer accounts and its clock at ``T0``, so a failing
example replays (and shrinks) on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.core.clock import add_calendar_months
from services.core.db import unit_of_work
from services.ledger import repository as repo
from services.ledger.clawback import ClawbackExceedsLot, clawback, reinstate
from services.ledger.errors import (
    CaptureExceedsHold,
    HoldExpired,
    HoldNotActive,
    InsufficientCredits,
    ReinstatementExceedsClawback,
)
from services.ledger.expiry import expire_lots
from services.ledger.holds import capture_hold, create_hold, expire_holds, release_hold
from services.ledger.invariants import check_invariants
from services.ledger.minting import grant, mint
from services.ledger.models import HoldStatus, Rail
from services.ledger.spending import spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import T0, new_account

ACCOUNTS = 3
EXAMPLES = {"sqlite": 30, "postgresql": 15}
STEPS = 40

account_indexes = st.integers(0, ACCOUNTS - 1)
picks = st.integers(0, 1_000)
amounts_credits = st.integers(1, 300)
time_jumps = st.one_of(
    st.integers(1, 3_600).map(lambda seconds: timedelta(seconds=seconds)),
    st.integers(1, 120).map(lambda days: timedelta(days=days)),
    st.integers(300, 400).map(lambda days: timedelta(days=days)),
)
# Some grants last less than a hold may, so that lots expire while reserved.
grant_lifetimes = st.one_of(
    st.integers(60, 7_200).map(lambda seconds: timedelta(seconds=seconds)),
    st.integers(1, 120).map(lambda days: timedelta(days=days)),
)


@dataclass
class LotModel:
    id: int
    account_id: int
    credits: int
    remaining_credits: int
    credited_at: datetime
    expires_at: datetime
    reserved_credits: int = 0
    expired_credits: int = 0
    clawed_back_credits: int = 0

    @property
    def free_credits(self) -> int:
        return self.remaining_credits - self.reserved_credits


@dataclass
class HoldModel:
    id: int
    account_id: int
    amount_credits: int
    expires_at: datetime
    allocations: list[tuple[int, int]]
    status: str = HoldStatus.ACTIVE
    captured_credits: int = 0


@dataclass
class MintModel:
    account_id: int
    amount_credits: int
    external_ref: str
    lot_id: int


@dataclass
class Model:
    """What the ledger should hold, worked out independently of it."""

    now: datetime
    balance_credits: dict[int, int]
    debt_credits: dict[int, int]
    lots: dict[int, LotModel] = field(default_factory=dict)
    holds: dict[int, HoldModel] = field(default_factory=dict)
    mints: list[MintModel] = field(default_factory=list)

    def available_credits(self, account_id: int) -> int:
        return sum(lot.free_credits for lot in self.drawable(account_id)) - self.debt_credits[account_id]

    def drawable(self, account_id: int) -> list[LotModel]:
        live = [
            lot
            for lot in self.lots.values()
            if lot.account_id == account_id and lot.expires_at > self.now and lot.free_credits > 0
        ]
        return sorted(live, key=lambda lot: (lot.expires_at, lot.credited_at, lot.id))

    def plan(self, account_id: int, amount_credits: int) -> list[tuple[int, int]]:
        draws, left = [], amount_credits
        for lot in self.drawable(account_id):
            if left == 0:
                break
            take = min(lot.free_credits, left)
            draws.append((lot.id, take))
            left -= take
        return draws

    def add_lot(self, account_id: int, lot_id: int, amount_credits: int, expires_at: datetime) -> int:
        repaid = min(self.debt_credits[account_id], amount_credits)
        self.debt_credits[account_id] -= repaid
        self.balance_credits[account_id] += amount_credits
        self.lots[lot_id] = LotModel(lot_id, account_id, amount_credits, amount_credits - repaid, self.now, expires_at)
        return repaid

    def settle(self, hold: HoldModel, capture_credits: int, status: str) -> None:
        left = capture_credits
        for lot_id, reserved in hold.allocations:
            lot = self.lots[lot_id]
            take = min(reserved, left)
            left -= take
            lot.reserved_credits -= reserved
            lot.remaining_credits -= take
            freed = reserved - take
            if freed and lot.expires_at <= self.now:
                lot.remaining_credits -= freed
                lot.expired_credits += freed
                self.balance_credits[hold.account_id] -= freed
        self.balance_credits[hold.account_id] -= capture_credits
        hold.status, hold.captured_credits = status, capture_credits


def ledger_machine(engine: Engine, empty_database: Callable[[], None]) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            empty_database()
            self.accounts = [new_account(engine, f"customer {n}") for n in range(ACCOUNTS)]
            self.model = Model(
                now=T0,
                balance_credits=dict.fromkeys(self.accounts, 0),
                debt_credits=dict.fromkeys(self.accounts, 0),
            )

        def pick_lot(self, pick: int) -> LotModel:
            lots = list(self.model.lots.values())
            return lots[pick % len(lots)]

        def pick_hold(self, pick: int) -> HoldModel:
            holds = list(self.model.holds.values())
            return holds[pick % len(holds)]

        @initialize(
            card_credits=st.lists(st.integers(100, 1_000), min_size=ACCOUNTS, max_size=ACCOUNTS),
            grant_credits=st.lists(st.integers(50, 500), min_size=ACCOUNTS, max_size=ACCOUNTS),
            grant_lifetimes=st.lists(grant_lifetimes, min_size=ACCOUNTS, max_size=ACCOUNTS),
        )
        def fund_every_account(self, card_credits, grant_credits, grant_lifetimes):
            for account in range(ACCOUNTS):
                self.mint_by_card(account, card_credits[account])
                self.grant_promotion(account, grant_credits[account], grant_lifetimes[account])

        @rule(account=account_indexes, amount_credits=amounts_credits)
        def mint_by_card(self, account, amount_credits):
            account_id, ref = self.accounts[account], f"cs_{uuid.uuid4().hex}"
            with unit_of_work(engine) as session:
                result = mint(
                    session,
                    account_id=account_id,
                    amount_credits=amount_credits,
                    rail=Rail.CARD,
                    external_ref=ref,
                    funding_account_id=SystemAccount.FUNDING_CARD,
                    cost_basis_cents=amount_credits,
                    credited_at=self.model.now,
                )
            expires_at = add_calendar_months(self.model.now, 12)
            assert result.expires_at == expires_at
            repaid = self.model.add_lot(account_id, result.lot_id, amount_credits, expires_at)
            assert result.debt_repaid_credits == repaid
            if repaid:
                event("mint repaid debt")
            self.model.mints.append(MintModel(account_id, amount_credits, ref, result.lot_id))

        @precondition(lambda self: self.model.mints)
        @rule(pick=picks)
        def mint_again(self, pick):
            earlier = self.model.mints[pick % len(self.model.mints)]
            with unit_of_work(engine) as session:
                result = mint(
                    session,
                    account_id=earlier.account_id,
                    amount_credits=earlier.amount_credits,
                    rail=Rail.CARD,
                    external_ref=earlier.external_ref,
                    funding_account_id=SystemAccount.FUNDING_CARD,
                    credited_at=self.model.now,
                )
            assert (result.replayed, result.lot_id) == (True, earlier.lot_id)

        @rule(account=account_indexes, amount_credits=amounts_credits, lifetime=grant_lifetimes)
        def grant_promotion(self, account, amount_credits, lifetime):
            account_id, expires_at = self.accounts[account], self.model.now + lifetime
            with unit_of_work(engine) as session:
                result = grant(
                    session,
                    account_id=account_id,
                    amount_credits=amount_credits,
                    idempotency_key=uuid.uuid4().hex,
                    expires_at=expires_at,
                    now=self.model.now,
                )
            assert result.debt_repaid_credits == self.model.add_lot(
                account_id, result.lot_id, amount_credits, expires_at
            )

        @rule(account=account_indexes, amount_credits=amounts_credits)
        def spend_credits(self, account, amount_credits):
            account_id = self.accounts[account]
            available = self.model.available_credits(account_id)
            with unit_of_work(engine) as session:
                call: dict[str, Any] = {
                    "account_id": account_id,
                    "amount_credits": amount_credits,
                    "now": self.model.now,
                }
                if amount_credits > available:
                    event("spend refused for lack of credits")
                    with pytest.raises(InsufficientCredits):
                        spend(session, idempotency_key=uuid.uuid4().hex, **call)
                    return
                result = spend(session, idempotency_key=uuid.uuid4().hex, **call)
            assert result.draws == self.model.plan(account_id, amount_credits)
            event(f"spend drew from {min(len(result.draws), 3)}{'+' if len(result.draws) >= 3 else ''} lots")
            for lot_id, take in result.draws:
                self.model.lots[lot_id].remaining_credits -= take
            self.model.balance_credits[account_id] -= amount_credits

        @rule(account=account_indexes, amount_credits=amounts_credits, ttl_seconds=st.integers(1, 7_200))
        def hold_credits(self, account, amount_credits, ttl_seconds):
            account_id = self.accounts[account]
            available = self.model.available_credits(account_id)
            with unit_of_work(engine) as session:
                call: dict[str, Any] = {
                    "account_id": account_id,
                    "amount_credits": amount_credits,
                    "idempotency_key": uuid.uuid4().hex,
                    "ttl_seconds": ttl_seconds,
                    "now": self.model.now,
                }
                if amount_credits > available:
                    with pytest.raises(InsufficientCredits):
                        create_hold(session, **call)
                    return
                held = create_hold(session, **call)
                allocations = [(row.lot_id, row.amount_credits) for row in repo.hold_allocations(session, held.id)]
            assert allocations == self.model.plan(account_id, amount_credits)
            event("hold created")
            for lot_id, reserved in allocations:
                self.model.lots[lot_id].reserved_credits += reserved
            self.model.holds[held.id] = HoldModel(
                held.id, account_id, amount_credits, self.model.now + timedelta(seconds=ttl_seconds), allocations
            )

        @precondition(lambda self: self.model.holds)
        @rule(pick=picks, percent=st.integers(1, 120))
        def capture(self, pick, percent):
            hold = self.pick_hold(pick)
            amount_credits = max(1, hold.amount_credits * percent // 100)
            expected_error = self.resolution_error(hold)
            if expected_error is None and amount_credits > hold.amount_credits:
                expected_error = CaptureExceedsHold
            with unit_of_work(engine) as session:
                call: dict[str, Any] = {"account_id": hold.account_id, "hold_id": hold.id, "now": self.model.now}
                if expected_error is not None:
                    event(f"capture refused: {expected_error.__name__}")
                    with pytest.raises(expected_error):
                        capture_hold(session, amount_credits=amount_credits, **call)
                    return
                captured = capture_hold(session, amount_credits=amount_credits, **call)
            assert (captured.status, captured.captured_credits) == (HoldStatus.CAPTURED, amount_credits)
            event("hold captured" + (" in full" if amount_credits == hold.amount_credits else " in part"))
            if any(self.model.lots[lot_id].expires_at <= self.model.now for lot_id, _ in hold.allocations):
                event("capture of a hold on an expired lot")
            self.model.settle(hold, amount_credits, HoldStatus.CAPTURED)

        @precondition(lambda self: self.model.holds)
        @rule(pick=picks)
        def release(self, pick):
            hold = self.pick_hold(pick)
            expected_error = self.resolution_error(hold)
            with unit_of_work(engine) as session:
                call: dict[str, Any] = {"account_id": hold.account_id, "hold_id": hold.id, "now": self.model.now}
                if expected_error is not None:
                    with pytest.raises(expected_error):
                        release_hold(session, **call)
                    return
                release_hold(session, **call)
            event("hold released")
            self.model.settle(hold, 0, HoldStatus.RELEASED)

        def resolution_error(self, hold: HoldModel) -> type[Exception] | None:
            if hold.status != HoldStatus.ACTIVE:
                return HoldNotActive
            if hold.expires_at <= self.model.now:
                return HoldExpired
            return None

        @rule()
        def expire_due_holds(self):
            with unit_of_work(engine) as session:
                released = expire_holds(session, now=self.model.now)
            due = [
                h for h in self.model.holds.values() if h.status == HoldStatus.ACTIVE and h.expires_at <= self.model.now
            ]
            assert released == len(due)
            for hold in due:
                event("hold expired")
                self.model.settle(hold, 0, HoldStatus.EXPIRED)

        @rule()
        def expire_due_lots(self):
            with unit_of_work(engine) as session:
                batch = expire_lots(session, now=self.model.now)
            due = [lot for lot in self.model.lots.values() if lot.free_credits > 0 and lot.expires_at <= self.model.now]
            assert (batch.lots_expired, batch.credits_expired) == (len(due), sum(lot.free_credits for lot in due))
            for lot in due:
                event("lot expired" + (" while partly reserved" if lot.reserved_credits else ""))
                self.model.balance_credits[lot.account_id] -= lot.free_credits
                lot.expired_credits += lot.free_credits
                lot.remaining_credits = lot.reserved_credits

        @precondition(lambda self: self.model.lots)
        @rule(pick=picks, amount_credits=amounts_credits)
        def claw_back(self, pick, amount_credits):
            lot = self.pick_lot(pick)
            with unit_of_work(engine) as session:
                call: dict[str, Any] = {
                    "lot_id": lot.id,
                    "amount_credits": amount_credits,
                    "idempotency_key": uuid.uuid4().hex,
                    "reason": "refund",
                    "now": self.model.now,
                }
                if amount_credits > lot.credits - lot.clawed_back_credits:
                    with pytest.raises(ClawbackExceedsLot):
                        clawback(session, **call)
                    return
                result = clawback(session, **call)
            from_lot = min(amount_credits, lot.free_credits)
            from_breakage = min(amount_credits - from_lot, lot.expired_credits)
            into_debt = amount_credits - from_lot - from_breakage
            assert (result.from_lot_credits, result.from_breakage_credits, result.debt_credits) == (
                from_lot,
                from_breakage,
                into_debt,
            )
            event("clawback" + (" from breakage" if from_breakage else "") + (" into debt" if into_debt else ""))
            lot.remaining_credits -= from_lot
            lot.expired_credits -= from_breakage
            lot.clawed_back_credits += amount_credits
            self.model.debt_credits[lot.account_id] += into_debt
            self.model.balance_credits[lot.account_id] -= from_lot + into_debt

        @precondition(lambda self: any(lot.clawed_back_credits for lot in self.model.lots.values()))
        @rule(pick=picks, amount_credits=amounts_credits)
        def reinstate_clawback(self, pick, amount_credits):
            clawed = [lot for lot in self.model.lots.values() if lot.clawed_back_credits]
            lot = clawed[pick % len(clawed)]
            with unit_of_work(engine) as session:
                call: dict[str, Any] = {
                    "lot_id": lot.id,
                    "amount_credits": amount_credits,
                    "idempotency_key": uuid.uuid4().hex,
                    "reason": "dispute won",
                    "now": self.model.now,
                }
                if amount_credits > lot.clawed_back_credits:
                    with pytest.raises(ReinstatementExceedsClawback):
                        reinstate(session, **call)
                    return
                result = reinstate(session, **call)
            cancelled = min(self.model.debt_credits[lot.account_id], amount_credits)
            event("reinstatement cancelling debt" if cancelled else "reinstatement onto the lot")
            assert (result.debt_credits, result.from_lot_credits) == (cancelled, amount_credits - cancelled)
            lot.remaining_credits += amount_credits - cancelled
            lot.clawed_back_credits -= amount_credits
            self.model.debt_credits[lot.account_id] -= cancelled
            self.model.balance_credits[lot.account_id] += amount_credits
            if lot.expires_at <= self.model.now and amount_credits > cancelled:
                # Put back on a lot whose time has passed: expired at once.
                event("reinstatement onto an expired lot")
                lot.remaining_credits -= amount_credits - cancelled
                lot.expired_credits += amount_credits - cancelled
                self.model.balance_credits[lot.account_id] -= amount_credits - cancelled

        @rule(jump=time_jumps)
        def advance_time(self, jump):
            event("time jump")
            self.model.now += jump

        @invariant()
        def ledger_matches_model_and_invariants_hold(self):
            with unit_of_work(engine) as session:
                assert check_invariants(session) == []
                for account_id in self.accounts:
                    assert repo.ledger_balance(session, account_id) == self.model.balance_credits[account_id]
                    account = repo.get_account(session, account_id)
                    assert account is not None
                    assert account.debt_credits == self.model.debt_credits[account_id]
                lots = repo.lots
                rows = session.execute(
                    select(lots).where(lots.c.account_id.in_(self.accounts)).order_by(lots.c.id)
                ).all()
                holds = repo.holds
                hold_rows = session.execute(
                    select(holds.c.id, holds.c.status, holds.c.captured_credits).where(
                        holds.c.account_id.in_(self.accounts)
                    )
                ).all()
            assert {
                row.id: (row.remaining_credits, row.reserved_credits, row.expired_credits, row.clawed_back_credits)
                for row in rows
            } == {
                lot.id: (lot.remaining_credits, lot.reserved_credits, lot.expired_credits, lot.clawed_back_credits)
                for lot in self.model.lots.values()
            }
            assert {row.id: (row.status, row.captured_credits) for row in hold_rows} == {
                hold.id: (hold.status, hold.captured_credits) for hold in self.model.holds.values()
            }

    return LedgerMachine


def test_random_operation_sequences_keep_every_invariant_and_match_the_model(engine, backend, empty_database):
    run_state_machine_as_test(
        ledger_machine(engine, empty_database),
        settings=settings(
            max_examples=EXAMPLES[backend],
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
