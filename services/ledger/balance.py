"""What a customer sees: balance, lots with their expiry, and the transaction history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.db import utc
from services.core.money import credits_to_cents
from services.ledger import repository as repo
from services.ledger.accounts import require_customer_account
from services.ledger.rows import AccountRow, AccountTransaction, LotRow, TransactionRow

EXPIRING_SOON = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: int
    # Spendable now: unreserved credits on unexpired lots, less any debt.
    available_credits: int
    reserved_credits: int
    debt_credits: int
    # The ledger balance: every lot's remaining credits less debt (negative when in debt).
    total_credits: int
    next_expiry_at: datetime | None
    next_expiry_credits: int
    expiring_within_30_days_credits: int

    @property
    def available_cents(self) -> int:
        """What the available credits are worth in US cents, for showing dollars beside them."""
        return credits_to_cents(self.available_credits)


def get_balance(session: Session, account_id: int, now: datetime | None = None) -> Balance:
    now = now or utcnow()
    debt = int(require_customer_account(session, account_id).debt_credits)
    totals = repo.lot_totals(session, account_id, now, now + EXPIRING_SOON)
    next_expiry = totals.next_expiry
    if next_expiry is not None and next_expiry.tzinfo is None:
        next_expiry = utc(next_expiry)
    return Balance(
        account_id=account_id,
        available_credits=max(0, int(totals.unreserved_live) - debt),
        reserved_credits=int(totals.reserved),
        debt_credits=debt,
        total_credits=int(totals.remaining) - debt,
        next_expiry_at=next_expiry,
        next_expiry_credits=repo.remaining_expiring_at(session, account_id, next_expiry) if next_expiry else 0,
        expiring_within_30_days_credits=int(totals.expiring_soon),
    )


def list_lots(
    session: Session, account_id: int, *, include_spent: bool = False, limit: int = 100, after_id: int = 0
) -> list[LotRow]:
    require_customer_account(session, account_id)
    t = repo.lots
    stmt = select(t).where(t.c.account_id == account_id, t.c.id > after_id)
    if not include_spent:
        stmt = stmt.where(t.c.remaining_credits > 0)
    return list(session.execute(stmt.order_by(t.c.id).limit(limit)).all())


def list_transactions(
    session: Session,
    account_id: int,
    *,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AccountTransaction]:
    """The account's journal transactions, newest first, with the signed amount on this account."""
    require_customer_account(session, account_id)
    t, e = repo.transactions, repo.entries
    stmt = (
        select(t.c.id, t.c.kind, t.c.created_at, t.c.description, t.c.details, e.c.amount_credits)
        .join(e, e.c.transaction_id == t.c.id)
        .where(e.c.account_id == account_id)
    )
    if kind is not None:
        stmt = stmt.where(t.c.kind == kind)
    if since is not None:
        stmt = stmt.where(t.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(t.c.created_at < until)
    if before_id is not None:
        stmt = stmt.where(t.c.id < before_id)
    return list(session.execute(stmt.order_by(t.c.id.desc()).limit(limit)).all())


def get_transaction(session: Session, transaction_id: int) -> TransactionRow | None:
    return repo.get_transaction(session, transaction_id)


def get_account(session: Session, account_id: int) -> AccountRow:
    return require_customer_account(session, account_id)


def list_accounts(session: Session, after_id: int, limit: int) -> list[AccountRow]:
    return repo.list_customer_accounts(session, limit, after_id)
