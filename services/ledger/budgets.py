"""Budgets: named spending caps per API key or project and period, checked atomically with the spend or hold
they limit (under the customer's account lock). A hold counts in full until it resolves; what it did not
capture is given back to the period it was charged to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session

from services.api.principal import Keys
from services.core.clock import period_start, utcnow
from services.core.errors import InvalidRequest
from services.ledger import repository as repo
from services.ledger.common import lock_customer, require_amount
from services.ledger.errors import BudgetNameTaken, BudgetNotFound
from services.ledger.models import ACCOUNT_SCOPE_REF, BudgetPeriod, BudgetScope
from services.ledger.rows import BudgetRow


@dataclass(frozen=True, slots=True)
class BudgetView:
    id: int
    name: str
    scope: str
    scope_ref: str
    period: str
    limit_credits: int
    used_credits: int
    period_start: datetime
    created_at: datetime
    updated_at: datetime


def _validate(
    session: Session, keys: Keys, account_id: int, scope: str, scope_ref: str, period: str, name: str
) -> None:
    if scope not in set(BudgetScope):
        raise InvalidRequest(f"scope must be one of {sorted(BudgetScope)}", field="scope")
    if period not in set(BudgetPeriod):
        raise InvalidRequest(f"period must be one of {sorted(BudgetPeriod)}", field="period")
    if not name.strip() or not scope_ref.strip():
        raise InvalidRequest("a budget needs a name and what it applies to", field="name")
    if scope == BudgetScope.ACCOUNT and scope_ref != ACCOUNT_SCOPE_REF:
        raise InvalidRequest(
            f'an account-wide budget names nothing: omit scope_ref (or give "{ACCOUNT_SCOPE_REF}")', field="scope_ref"
        )
    if scope == BudgetScope.API_KEY:
        key_account = (
            keys.account_of_key(session, int(scope_ref))
            if scope_ref.isascii() and scope_ref.isdigit() and len(scope_ref) <= 18
            else None
        )
        if key_account != account_id:
            raise InvalidRequest("scope_ref must be the id of one of this account's API keys", field="scope_ref")


def _name_taken(session: Session, account_id: int, name: str, except_id: int | None = None) -> bool:
    t = repo.budgets
    stmt = select(t.c.id).where(t.c.account_id == account_id, t.c.name == name, t.c.deleted_at.is_(None))
    return any(found != except_id for found in session.execute(stmt).scalars())


def create_budget(
    session: Session,
    keys: Keys,
    *,
    account_id: int,
    name: str,
    scope: str,
    scope_ref: str,
    period: str,
    limit_credits: int,
    now: datetime | None = None,
) -> BudgetView:
    now = now or utcnow()
    require_amount(limit_credits, name="limit_credits", allow_zero=True)
    lock_customer(session, account_id)
    _validate(session, keys, account_id, scope, scope_ref, period, name)
    if _name_taken(session, account_id, name):
        raise BudgetNameTaken(f"a budget named {name!r} exists", name=name)
    budget_id = session.execute(
        insert(repo.budgets)
        .values(
            account_id=account_id,
            name=name,
            scope=scope,
            scope_ref=scope_ref,
            period=period,
            limit_credits=limit_credits,
            created_at=now,
            updated_at=now,
        )
        .returning(repo.budgets.c.id)
    ).scalar_one()
    return get_budget(session, account_id, int(budget_id), now)


def _budget_row(session: Session, account_id: int, budget_id: int) -> BudgetRow:
    t = repo.budgets
    row = session.execute(
        select(t).where(t.c.id == budget_id, t.c.account_id == account_id, t.c.deleted_at.is_(None))
    ).first()
    if row is None:
        raise BudgetNotFound(f"budget {budget_id} not found", budget_id=budget_id)
    return row


def _view(session: Session, row: BudgetRow, now: datetime) -> BudgetView:
    start = period_start(now, row.period)
    return BudgetView(
        id=row.id,
        name=row.name,
        scope=row.scope,
        scope_ref=row.scope_ref,
        period=row.period,
        limit_credits=row.limit_credits,
        used_credits=repo.budget_used(session, row.id, start),
        period_start=start,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def get_budget(session: Session, account_id: int, budget_id: int, now: datetime | None = None) -> BudgetView:
    return _view(session, _budget_row(session, account_id, budget_id), now or utcnow())


def list_budgets(
    session: Session, account_id: int, now: datetime | None = None, *, after_id: int = 0, limit: int | None = None
) -> list[BudgetView]:
    t = repo.budgets
    stmt = select(t).where(t.c.account_id == account_id, t.c.deleted_at.is_(None), t.c.id > after_id).order_by(t.c.id)
    rows = session.execute(stmt if limit is None else stmt.limit(limit)).all()
    moment = now or utcnow()
    return [_view(session, row, moment) for row in rows]


def update_budget(
    session: Session,
    *,
    account_id: int,
    budget_id: int,
    name: str | None = None,
    limit_credits: int | None = None,
    now: datetime | None = None,
) -> BudgetView:
    now = now or utcnow()
    lock_customer(session, account_id)
    row = _budget_row(session, account_id, budget_id)
    values: dict[str, Any] = {"updated_at": now}
    if limit_credits is not None:
        values["limit_credits"] = require_amount(limit_credits, name="limit_credits", allow_zero=True)
    if name is not None:
        if not name.strip():
            raise InvalidRequest("a budget needs a name", field="name")
        if _name_taken(session, account_id, name, except_id=row.id):
            raise BudgetNameTaken(f"a budget named {name!r} exists", name=name)
        values["name"] = name
    session.execute(update(repo.budgets).where(repo.budgets.c.id == budget_id).values(**values))
    return get_budget(session, account_id, budget_id, now)


def delete_budget(session: Session, *, account_id: int, budget_id: int, now: datetime | None = None) -> None:
    """Soft delete: the budget stops applying; its history stays."""
    lock_customer(session, account_id)
    _budget_row(session, account_id, budget_id)
    session.execute(update(repo.budgets).where(repo.budgets.c.id == budget_id).values(deleted_at=now or utcnow()))
