"""Customer accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.errors import AccountNotFound, InvalidEmail
from services.ledger.models import AccountKind
from services.ledger.rows import AccountRow


def create_customer_account(session: Session, *, name: str, now: datetime | None = None) -> int:
    if not name.strip():
        raise InvalidRequest("an account needs a name", field="name")
    return repo.insert_account(
        session, kind=AccountKind.CUSTOMER, name=name.strip(), code=None, created_at=now or utcnow()
    )


def require_customer_account(session: Session, account_id: int) -> AccountRow:
    """The customer account, or ``AccountNotFound`` (no such account, or one of the system's)."""
    row = repo.get_account(session, account_id)
    if row is None or row.kind != AccountKind.CUSTOMER:
        raise AccountNotFound(f"account {account_id} not found", account_id=account_id)
    return row


def normalise_email(address: str) -> str:
    """A deliverable-looking address in its normal form (the domain lowercased, IDNA); no DNS lookup. Outside
    production, addresses under the reserved ``.test`` domain are accepted too (development's demo account)."""
    testing = get_settings().environment != "production"
    try:
        return str(validate_email(address.strip(), check_deliverability=False, test_environment=testing).normalized)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"not a valid email address: {exc}", field="email") from None


_UNSET: Any = object()


def update_email(
    session: Session, account_id: int, *, email: str | None = _UNSET, verified: bool | None = None
) -> None:
    """Set an account's email (None removes it) and/or whether it is verified. A new address given without
    ``verified`` is unverified; the same address keeps its state."""
    current = require_customer_account(session, account_id)
    values: dict[str, Any] = {}
    if email is not _UNSET:
        address = normalise_email(email) if email is not None else None
        values["email"] = address
        if address != current.email:
            values["email_verified"] = False
    if verified is not None:
        values["email_verified"] = verified
    if values:
        repo.update_account(session, account_id, **values)
