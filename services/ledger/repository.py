"""The ledger's queries. SQLAlchemy Core on the caller's session: nothing here commits.

These are the Core store's reads and writes (``core_store``), and the reads every ledger module shares. Which
operations take the PostgreSQL store's own SQL instead is listed in ``store``. The reads endpoints, history and
balances use return rows typed by their shapes in ``services.ledger.rows``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, exists, func, insert, or_, select, tuple_, update
from sqlmodel import Session

from services.core.db import table_of
from services.ledger.models import (
    Account,
    AccountKind,
    Budget,
    BudgetScope,
    BudgetUsage,
    Hold,
    HoldAllocation,
    HoldBudgetCharge,
    LedgerEntry,
    LedgerTransaction,
    Lot,
    LotExpiryQueue,
    LotMovement,
)
from services.ledger.plans import LotChange
from services.ledger.rows import AccountRow, EntryAmount, LotRow, LotTotals, MovementAmount, TransactionRow

accounts = table_of(Account)
transactions = table_of(LedgerTransaction)
entries = table_of(LedgerEntry)
lots = table_of(Lot)
expiry_queue = table_of(LotExpiryQueue)
movements = table_of(LotMovement)
holds = table_of(Hold)
allocations = table_of(HoldAllocation)
budgets = table_of(Budget)
budget_usage = table_of(BudgetUsage)
hold_budget_charges = table_of(HoldBudgetCharge)

FIRST_DRAW_PAGE = 4
DRAW_PAGE = 32


@dataclass(frozen=True, slots=True)
class LockedAccount:
    id: int
    kind: str
    debt_credits: int
    has_budgets: bool
    # The transaction already posted under the idempotency key asked about, if any.
    existing_transaction_id: int | None
    existing_request_hash: str | None


_existing = transactions.alias("existing")

_lock_account_stmt = select(accounts.c.id).where(accounts.c.id == bindparam("account_id")).with_for_update()

_account_state_stmt = (
    select(
        accounts.c.id,
        accounts.c.kind,
        accounts.c.debt_credits,
        exists().where(budgets.c.account_id == accounts.c.id, budgets.c.deleted_at.is_(None)).label("has_budgets"),
        _existing.c.id.label("existing_id"),
        _existing.c.request_hash.label("existing_hash"),
    )
    .select_from(accounts.outerjoin(_existing, _existing.c.idempotency_key == bindparam("idempotency_key")))
    .where(accounts.c.id == bindparam("account_id"))
)


def lock_account(session: Session, account_id: int, idempotency_key: str | None = None) -> LockedAccount | None:
    """Lock the account row (PostgreSQL; SQLite's IMMEDIATE transaction already excludes other writers), then
    read the account's debt, whether it has budgets, and any transaction already posted under ``idempotency_key``.

    Two statements on purpose: under READ COMMITTED a statement that waited for the lock still reads the snapshot
    it started with, so what the previous holder of the lock committed (a transaction under the same idempotency
    key, a new budget) is only visible to a statement that begins once the lock is granted.
    """
    session.execute(_lock_account_stmt, {"account_id": account_id})
    row = session.execute(
        _account_state_stmt, {"account_id": account_id, "idempotency_key": idempotency_key or ""}
    ).first()
    if row is None:
        return None
    return LockedAccount(
        id=row.id,
        kind=row.kind,
        debt_credits=row.debt_credits,
        has_budgets=bool(row.has_budgets),
        existing_transaction_id=row.existing_id,
        existing_request_hash=row.existing_hash,
    )


def lock_accounts(session: Session, account_ids: Iterable[int]) -> list[int]:
    """Lock several accounts in id order (the fixed lock order); returns the ids that exist."""
    ids = sorted(set(account_ids))
    if not ids:
        return []
    stmt = select(accounts.c.id).where(accounts.c.id.in_(ids)).order_by(accounts.c.id).with_for_update()
    return list(session.execute(stmt).scalars())


def set_debt(session: Session, account_id: int, debt_credits: int) -> None:
    session.execute(update(accounts).where(accounts.c.id == account_id).values(debt_credits=debt_credits))


def insert_account(session: Session, *, kind: str, name: str, code: str | None, created_at: datetime) -> int:
    result = session.execute(
        insert(accounts)
        .values(kind=kind, name=name, code=code, debt_credits=0, created_at=created_at)
        .returning(accounts.c.id)
    )
    return int(result.scalar_one())


def update_account(session: Session, account_id: int, **values: Any) -> None:
    session.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def get_account(session: Session, account_id: int) -> AccountRow | None:
    return session.execute(select(accounts).where(accounts.c.id == account_id)).first()


def account_email(session: Session, account_id: int) -> str | None:
    """The account's email address, if it has one (one column read, for a message that goes only where there is
    one)."""
    email = session.execute(select(accounts.c.email).where(accounts.c.id == account_id)).scalar_one_or_none()
    return str(email) if email else None


def list_customer_accounts(session: Session, limit: int, after_id: int = 0) -> list[AccountRow]:
    stmt = (
        select(accounts)
        .where(accounts.c.kind == AccountKind.CUSTOMER, accounts.c.id > after_id)
        .order_by(accounts.c.id)
        .limit(limit)
    )
    return list(session.execute(stmt).all())


# --- the journal -------------------------------------------------------------------------------------------


def get_transaction(session: Session, transaction_id: int) -> TransactionRow | None:
    return session.execute(select(transactions).where(transactions.c.id == transaction_id)).first()


def find_transaction(session: Session, idempotency_key: str) -> TransactionRow | None:
    return session.execute(select(transactions).where(transactions.c.idempotency_key == idempotency_key)).first()


def insert_transaction(
    session: Session,
    *,
    kind: str,
    idempotency_key: str,
    account_id: int | None,
    created_at: datetime,
    legs: Sequence[tuple[int, int]],
    request_hash: str | None = None,
    description: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Insert a journal transaction and its entries (account id, signed credits); returns its id."""
    txn_id = int(
        session.execute(
            insert(transactions)
            .values(
                kind=kind,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                account_id=account_id,
                created_at=created_at,
                description=description,
                details=details or {},
            )
            .returning(transactions.c.id)
        ).scalar_one()
    )
    session.execute(
        insert(entries),
        [
            {
                "transaction_id": txn_id,
                "account_id": leg_account,
                "amount_credits": amount,
                "created_at": created_at,
            }
            for leg_account, amount in legs
        ],
    )
    return txn_id


def insert_transactions(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert many journal transactions at once (no entries); ids come back in the order given."""
    if not rows:
        return []
    result = session.execute(
        insert(transactions).returning(transactions.c.id, sort_by_parameter_order=True), list(rows)
    )
    return [int(row.id) for row in result]


def transaction_entries(session: Session, transaction_id: int) -> list[EntryAmount]:
    return list(
        session.execute(
            select(entries.c.account_id, entries.c.amount_credits)
            .where(entries.c.transaction_id == transaction_id)
            .order_by(entries.c.id)
        ).all()
    )


# --- lots --------------------------------------------------------------------------------------------------


def insert_lot(session: Session, values: dict[str, Any]) -> int:
    return int(session.execute(insert(lots).values(**values).returning(lots.c.id)).scalar_one())


def enqueue_lot(session: Session, lot_id: int, account_id: int, expires_at: datetime) -> None:
    """The lot's entry in the expiry queue (written with the lot)."""
    session.execute(insert(expiry_queue).values(expires_at=expires_at, lot_id=lot_id, account_id=account_id))


def dequeue_lots(session: Session, lot_ids: Sequence[int]) -> None:
    """The lots' entries leave the expiry queue (found by the lots' own expiry times)."""
    if lot_ids:
        queued = select(lots.c.expires_at, lots.c.id).where(lots.c.id.in_(lot_ids))
        session.execute(
            delete(expiry_queue).where(tuple_(expiry_queue.c.expires_at, expiry_queue.c.lot_id).in_(queued))
        )


def get_lot(session: Session, lot_id: int) -> LotRow | None:
    return session.execute(select(lots).where(lots.c.id == lot_id)).first()


def find_lot_by_ref(session: Session, rail: str, external_ref: str) -> LotRow | None:
    return session.execute(select(lots).where(lots.c.rail == rail, lots.c.external_ref == external_ref)).first()


# Draw-down order: soonest expiry, then oldest credited, then lowest id (the ix_lots_drawable index's order).
DRAW_ORDER = (lots.c.expires_at, lots.c.credited_at, lots.c.id)

_drawable_stmt = (
    select(lots.c.id, lots.c.remaining_credits, lots.c.reserved_credits, lots.c.expires_at)
    .where(
        lots.c.account_id == bindparam("account_id"),
        lots.c.remaining_credits > 0,
        lots.c.expires_at > bindparam("now"),
    )
    .order_by(*DRAW_ORDER)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)


def drawable_lots(session: Session, account_id: int, now: datetime, needed_credits: int) -> list[tuple[int, int]]:
    """(lot id, unreserved credits) in draw-down order (soonest expiry, then oldest, then lowest id), only as
    many lots as it takes to cover ``needed_credits`` (all of them when the account holds less).

    The first page is small (one lot usually covers a spend), so an account with many lots costs no more."""
    found: list[tuple[int, int]] = []
    covered = 0
    offset = 0
    page_size = FIRST_DRAW_PAGE
    while covered < needed_credits:
        page = session.execute(
            _drawable_stmt, {"account_id": account_id, "now": now, "limit": page_size, "offset": offset}
        ).all()
        for row in page:
            free = row.remaining_credits - row.reserved_credits
            if free > 0:
                found.append((row.id, free))
                covered += free
                if covered >= needed_credits:
                    break
        if len(page) < page_size:
            break
        offset += page_size
        page_size = DRAW_PAGE
    return found


_change_lot_stmt = (
    update(lots)
    .where(lots.c.id == bindparam("lot_id"))
    .values(
        remaining_credits=lots.c.remaining_credits + bindparam("remaining"),
        reserved_credits=lots.c.reserved_credits + bindparam("reserved"),
        expired_credits=lots.c.expired_credits + bindparam("expired"),
        clawed_back_credits=lots.c.clawed_back_credits + bindparam("clawed_back"),
    )
)


def change_lots(session: Session, changes: Sequence[LotChange]) -> None:
    """Add each change's signed credits to its lot's counters (one change per lot)."""
    if changes:
        session.execute(
            _change_lot_stmt,
            [
                {
                    "lot_id": c.lot_id,
                    "remaining": c.remaining_credits,
                    "reserved": c.reserved_credits,
                    "expired": c.expired_credits,
                    "clawed_back": c.clawed_back_credits,
                }
                for c in changes
            ],
        )


def insert_movements(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(movements), list(rows))


def movement_total(session: Session, transaction_id: int, kind: str) -> int:
    value = session.execute(
        select(func.coalesce(func.sum(movements.c.amount_credits), 0)).where(
            movements.c.transaction_id == transaction_id, movements.c.kind == kind
        )
    ).scalar()
    return int(value or 0)


def transaction_movements(session: Session, transaction_id: int) -> list[MovementAmount]:
    return list(
        session.execute(
            select(movements.c.lot_id, movements.c.kind, movements.c.amount_credits)
            .where(movements.c.transaction_id == transaction_id)
            .order_by(movements.c.id)
        ).all()
    )


def lots_by_id(session: Session, lot_ids: Iterable[int]) -> dict[int, LotRow]:
    ids = list(set(lot_ids))
    if not ids:
        return {}
    return {row.id: row for row in session.execute(select(lots).where(lots.c.id.in_(ids))).all()}


# --- holds -------------------------------------------------------------------------------------------------


def get_hold(session: Session, hold_id: int) -> Any:
    return session.execute(select(holds).where(holds.c.id == hold_id)).first()


def find_hold_by_key(session: Session, account_id: int, idempotency_key: str) -> Any:
    return session.execute(
        select(holds).where(holds.c.account_id == account_id, holds.c.idempotency_key == idempotency_key)
    ).first()


def insert_hold(session: Session, values: dict[str, Any]) -> int:
    return int(session.execute(insert(holds).values(**values).returning(holds.c.id)).scalar_one())


def update_hold(session: Session, hold_id: int, **values: Any) -> None:
    session.execute(update(holds).where(holds.c.id == hold_id).values(**values))


def insert_allocations(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(allocations), list(rows))


def hold_allocations(session: Session, hold_id: int) -> list[Any]:
    stmt = (
        select(allocations.c.lot_id, allocations.c.amount_credits, lots.c.expires_at)
        .join(lots, lots.c.id == allocations.c.lot_id)
        .where(allocations.c.hold_id == hold_id)
        .order_by(allocations.c.position)
    )
    return list(session.execute(stmt).all())


def expired_active_holds(session: Session, now: datetime, limit: int) -> list[Any]:
    stmt = (
        select(holds.c.id, holds.c.account_id)
        .where(holds.c.status == "active", holds.c.expires_at <= now)
        .order_by(holds.c.expires_at, holds.c.id)
        .limit(limit)
    )
    return list(session.execute(stmt).all())


# --- budgets -----------------------------------------------------------------------------------------------


def applicable_budgets(session: Session, account_id: int, api_key_id: int | None, project: str | None) -> list[Any]:
    conditions = []
    if api_key_id is not None:
        conditions.append(and_(budgets.c.scope == "api_key", budgets.c.scope_ref == str(api_key_id)))
    if project is not None:
        conditions.append(and_(budgets.c.scope == "project", budgets.c.scope_ref == project))
    if not conditions:
        return []
    conditions.append(budgets.c.scope == BudgetScope.ACCOUNT.value)
    stmt = (
        select(budgets.c.id, budgets.c.name, budgets.c.period, budgets.c.limit_credits)
        .where(budgets.c.account_id == account_id, budgets.c.deleted_at.is_(None), or_(*conditions))
        .order_by(budgets.c.id)
    )
    return list(session.execute(stmt).all())


def budget_used(session: Session, budget_id: int, period_start: datetime) -> int:
    value = session.execute(
        select(budget_usage.c.used_credits).where(
            budget_usage.c.budget_id == budget_id, budget_usage.c.period_start == period_start
        )
    ).scalar()
    return int(value or 0)


def add_budget_usage(session: Session, budget_id: int, period_start: datetime, delta_credits: int) -> None:
    result = session.execute(
        update(budget_usage)
        .where(budget_usage.c.budget_id == budget_id, budget_usage.c.period_start == period_start)
        .values(used_credits=budget_usage.c.used_credits + delta_credits)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.execute(
            insert(budget_usage).values(budget_id=budget_id, period_start=period_start, used_credits=delta_credits)
        )


def insert_hold_budget_charges(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(hold_budget_charges), list(rows))


def hold_budget_charges_of(session: Session, hold_id: int) -> list[Any]:
    return list(session.execute(select(hold_budget_charges).where(hold_budget_charges.c.hold_id == hold_id)).all())


# --- balances ----------------------------------------------------------------------------------------------


def lot_totals(session: Session, account_id: int, now: datetime, soon: datetime) -> LotTotals:
    live = lots.c.expires_at > now
    stmt = select(
        func.coalesce(func.sum(lots.c.remaining_credits), 0).label("remaining"),
        func.coalesce(func.sum(lots.c.reserved_credits), 0).label("reserved"),
        func.coalesce(func.sum(case((live, lots.c.remaining_credits - lots.c.reserved_credits), else_=0)), 0).label(
            "unreserved_live"
        ),
        func.coalesce(
            func.sum(case((and_(live, lots.c.expires_at <= soon), lots.c.remaining_credits), else_=0)), 0
        ).label("expiring_soon"),
        func.min(case((live, lots.c.expires_at), else_=None)).label("next_expiry"),
    ).where(lots.c.account_id == account_id, lots.c.remaining_credits > 0)
    return session.execute(stmt).one()


def remaining_expiring_at(session: Session, account_id: int, expires_at: datetime) -> int:
    value = session.execute(
        select(func.coalesce(func.sum(lots.c.remaining_credits), 0)).where(
            lots.c.account_id == account_id, lots.c.remaining_credits > 0, lots.c.expires_at == expires_at
        )
    ).scalar()
    return int(value or 0)


def ledger_balance(session: Session, account_id: int) -> int:
    value = session.execute(
        select(func.coalesce(func.sum(entries.c.amount_credits), 0)).where(entries.c.account_id == account_id)
    ).scalar()
    return int(value or 0)
