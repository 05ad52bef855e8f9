"""The ledger's store over SQLAlchemy Core (``repository``): SQLite, and PostgreSQL without psycopg's pipeline.

Statement by statement, on the caller's session (nothing here commits). The lock is the account's row (``FOR
UPDATE`` on PostgreSQL; on SQLite the IMMEDIATE transaction already excludes every other writer), and every read
of the state starts once it is granted. Writes follow the plan: each table gets its new rows in the order the plan
lists them, so the PostgreSQL store, writing the same plan in one statement, gives the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlmodel import Session

from services.core.clock import period_start
from services.core.db import UTCDateTime
from services.ledger import repository as repo
from services.ledger.common import movement_row
from services.ledger.models import AccountKind, HoldStatus
from services.ledger.plans import (
    AccountState,
    BudgetUse,
    ClawbackPlan,
    DrawPlan,
    DrawRequest,
    DueLot,
    DueLots,
    Existing,
    ExpiryPlan,
    HoldPlan,
    HoldRequest,
    HoldRow,
    LockedHold,
    MintPlan,
    MintRequest,
    Posting,
    SettlePlan,
    Writes,
)

lots = repo.lots


def hold_row(row: Any) -> HoldRow:
    """A hold's row read through the repository, as the ledger shows it."""
    return HoldRow(*(getattr(row, name) for name in HoldRow._fields))


class Written(NamedTuple):
    # The ids of the plan's transactions, in the order of its postings.
    transaction_ids: list[int]
    # The new lot's id, if the plan makes one.
    lot_id: int | None


class CoreStore:
    """See the module's docstring; ``store.LedgerStore`` says what each method promises."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # --- locks and reads ---------------------------------------------------------------------------------------

    def lock_account(self, account_id: int, idempotency_key: str | None = None) -> AccountState:
        return self._locked(account_id, idempotency_key)[0]

    def lock_for_mint(self, req: MintRequest) -> AccountState:
        return self.lock_account(req.account_id, req.idempotency_key)

    def lock_for_draw(self, req: DrawRequest) -> AccountState:
        return self._with_lots(self._locked(req.account_id, req.idempotency_key), req)

    def lock_for_hold(self, req: HoldRequest) -> AccountState:
        state, has_budgets = self._locked(req.account_id, None)
        if state.kind == AccountKind.CUSTOMER:
            found = repo.find_hold_by_key(self.session, req.account_id, req.idempotency_key)
            if found is not None:
                return state._replace(existing=Existing(found.request_hash, hold=hold_row(found)))
        return self._with_lots((state, has_budgets), req)

    def _locked(self, account_id: int, idempotency_key: str | None) -> tuple[AccountState, bool]:
        locked = repo.lock_account(self.session, account_id, idempotency_key)
        if locked is None:
            return AccountState(None, 0), False
        existing = None
        if locked.existing_transaction_id is not None:
            existing = Existing(locked.existing_request_hash, locked.existing_transaction_id)
        return AccountState(locked.kind, locked.debt_credits, existing), locked.has_budgets

    def _with_lots(self, locked: tuple[AccountState, bool], req: DrawRequest | HoldRequest) -> AccountState:
        """The state with the lots that cover the request and the budgets that apply, unless there is nothing
        to plan (no customer, or a replay)."""
        state, has_budgets = locked
        if state.kind != AccountKind.CUSTOMER or state.existing is not None:
            return state
        candidates = repo.drawable_lots(self.session, req.account_id, req.now, req.amount_credits + state.debt_credits)
        budgets: list[BudgetUse] = []
        if has_budgets:
            for budget in repo.applicable_budgets(self.session, req.account_id, req.api_key_id, req.project):
                used = repo.budget_used(self.session, budget.id, period_start(req.now, budget.period))
                budgets.append(BudgetUse(budget.id, budget.name, budget.period, budget.limit_credits, used))
        return state._replace(candidates=candidates, budgets=budgets)

    def lock_hold(self, account_id: int | None, hold_id: int) -> LockedHold | None:
        found = repo.get_hold(self.session, hold_id)
        if found is None or (account_id is not None and found.account_id != account_id):
            return None
        state = self.lock_account(found.account_id)
        row = repo.get_hold(self.session, hold_id)  # read again under the lock
        allocations = [(a.lot_id, a.amount_credits, a.expires_at) for a in repo.hold_allocations(self.session, hold_id)]
        charges = [(c.budget_id, c.period_start) for c in repo.hold_budget_charges_of(self.session, hold_id)]
        return LockedHold(state.kind, hold_row(row), allocations, charges)

    def lock_due_lots(self, now: datetime, limit: int) -> DueLots:
        picked = self._pick(now, limit)
        if not picked:
            return DueLots(0, [])
        repo.lock_accounts(self.session, (row.account_id for row in picked))
        taken = sorted(row.lot_id for row in picked)
        # Read again under the locks: a hold or a spend may have changed them since.
        current = self.session.execute(_current_due_stmt, {"now": now, "ids": taken}).all()
        return DueLots(len(picked), [DueLot(*row) for row in current], taken)

    def _pick(self, now: datetime, limit: int) -> list[Any]:
        """The soonest lot in the expiry queue whose time has come, then, account by account in the order their
        first lot falls due, every lot of each account whose time has come, up to ``limit`` lots."""
        soonest = self.session.execute(_soonest_stmt, {"now": now, "limit": limit})
        accounts = dict.fromkeys(row.account_id for row in soonest)
        picked: list[Any] = []
        for account_id in accounts:
            if len(picked) == limit:
                break
            params = {"account_id": account_id, "now": now, "limit": limit - len(picked)}
            picked += self.session.execute(_account_due_stmt, params).all()
        return picked

    # --- writes ------------------------------------------------------------------------------------------------

    def write_draw(self, plan: DrawPlan) -> int:
        return self.write(plan.writes)[0][0]

    def write_mint(self, plan: MintPlan) -> tuple[int, int]:
        transaction_ids, lot_id = self.write(plan.writes)
        assert lot_id is not None
        return lot_id, transaction_ids[0]

    def write_expiry(self, plan: ExpiryPlan) -> int | None:
        transaction_ids, _ = self.write(plan.writes)
        repo.dequeue_lots(self.session, plan.dequeued)
        return transaction_ids[0] if transaction_ids else None

    def write_clawback(self, plan: ClawbackPlan) -> int:
        return self.write(plan.writes)[0][0]

    def write_hold(self, plan: HoldPlan) -> HoldRow:
        req = plan.request
        hold_id = repo.insert_hold(
            self.session,
            {
                "account_id": req.account_id,
                "api_key_id": req.api_key_id,
                "project": req.project,
                "idempotency_key": req.idempotency_key,
                "request_hash": req.request_hash,
                "amount_credits": req.amount_credits,
                "captured_credits": 0,
                "status": HoldStatus.ACTIVE,
                "description": req.description,
                "created_at": req.now,
                "expires_at": req.expires_at,
            },
        )
        repo.insert_allocations(
            self.session,
            [
                {"hold_id": hold_id, "lot_id": lot_id, "position": position, "amount_credits": credits}
                for position, (lot_id, credits) in enumerate(plan.reservations)
            ],
        )
        repo.insert_hold_budget_charges(
            self.session,
            [
                {
                    "hold_id": hold_id,
                    "budget_id": budget_id,
                    "period_start": start,
                    "amount_credits": req.amount_credits,
                }
                for budget_id, start in plan.budget_charges
            ],
        )
        self.write(plan.writes)
        return hold_row(repo.get_hold(self.session, hold_id))

    def write_settle(self, plan: SettlePlan) -> HoldRow:
        transaction_ids, _ = self.write(plan.writes)
        repo.update_hold(
            self.session,
            plan.hold_id,
            status=plan.status,
            captured_credits=plan.capture_credits,
            resolved_at=plan.writes.now,
            capture_transaction_id=None if plan.capture_posting is None else transaction_ids[plan.capture_posting],
        )
        return hold_row(repo.get_hold(self.session, plan.hold_id))

    def write(self, writes: Writes) -> Written:
        """Every row of ``writes``, table by table in the plan's order."""
        session, now = self.session, writes.now
        transaction_ids: list[int] = []
        for posting in writes.postings:
            transaction_ids.append(self._post(posting, now, transaction_ids))
        lot_id: int | None = None
        if writes.new_lot is not None:
            lot = writes.new_lot
            lot_id = repo.insert_lot(session, {**lot, "mint_transaction_id": transaction_ids[0]})
            repo.enqueue_lot(session, lot_id, lot["account_id"], lot["expires_at"])
        new_lot = lot_id or 0
        repo.change_lots(session, writes.lots)
        repo.insert_movements(
            session,
            [
                movement_row(
                    new_lot if m.lot_id is None else m.lot_id,
                    transaction_ids[m.posting],
                    m.kind,
                    m.amount_credits,
                    now,
                    m.hold_id,
                )
                for m in writes.movements
            ],
        )
        for budget_id, start, credits in writes.budgets:
            repo.add_budget_usage(session, budget_id, start, credits)
        if writes.debt is not None:
            repo.set_debt(session, *writes.debt)
        return Written(transaction_ids, lot_id)

    def _post(self, posting: Posting, now: datetime, earlier: Sequence[int]) -> int:
        details = posting.details
        if posting.first_transaction_detail is not None:
            details = {**details, posting.first_transaction_detail: earlier[0]}
        return repo.insert_transaction(
            self.session,
            kind=posting.kind,
            idempotency_key=posting.idempotency_key,
            request_hash=posting.request_hash,
            account_id=posting.account_id,
            created_at=now,
            legs=posting.legs,
            description=posting.description,
            details=details,
        )


_now = bindparam("now", type_=UTCDateTime)
queue = repo.expiry_queue

_soonest_stmt = (
    select(queue.c.lot_id, queue.c.account_id)
    .where(queue.c.expires_at <= _now)
    .order_by(queue.c.expires_at, queue.c.lot_id)
    .limit(bindparam("limit"))
)

_account_due_stmt = (
    select(queue.c.lot_id, queue.c.account_id)
    .where(queue.c.account_id == bindparam("account_id"), queue.c.expires_at <= _now)
    .order_by(queue.c.expires_at, queue.c.lot_id)
    .limit(bindparam("limit"))
)

_current_due_stmt = (
    select(
        lots.c.id,
        lots.c.account_id,
        (lots.c.remaining_credits - lots.c.reserved_credits).label("amount"),
        lots.c.reserved_credits,
    )
    .where(
        lots.c.id.in_(bindparam("ids", expanding=True)),
        lots.c.remaining_credits > lots.c.reserved_credits,
        lots.c.expires_at <= _now,
    )
    .order_by(lots.c.id)
)
