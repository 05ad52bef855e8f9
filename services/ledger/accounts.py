"""Customer accounts."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.ledger import repository as repo
from services.ledger.errors import AccountNotFound
from services.ledger.models import AccountKind


def create_customer_account(session: Session, *, name: str, now: datetime | None = None) -> int:
    if not name.strip():
        raise InvalidRequest("an account needs a name", field="name")
    return repo.insert_account(
        session, kind=AccountKind.CUSTOMER, name=name.strip(), code=None, created_at=now or utcnow()
    )


def require_customer_account(session: Session, account_id: int) -> None:
    row = repo.get_account(session, account_id)
    if row is None or row.kind != AccountKind.CUSTOMER:
        raise AccountNotFound(f"account {account_id} not found", account_id=account_id)
