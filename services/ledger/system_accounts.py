"""The platform's own accounts. The fixed ones have fixed ids, seeded by the first migration."""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.db import table_of
from services.ledger.models import Account, AccountKind


class SystemAccount:
    FUNDING_CARD = 1
    REVENUE_USAGE = 2
    BREAKAGE = 3
    CLAWBACKS = 4
    PROMOTIONS = 5
    ADJUSTMENTS = 6


FIXED_SYSTEM_ACCOUNTS: dict[int, tuple[str, str]] = {
    SystemAccount.FUNDING_CARD: ("funding:card", "Card funding (Stripe)"),
    SystemAccount.REVENUE_USAGE: ("revenue:usage", "Usage revenue"),
    SystemAccount.BREAKAGE: ("breakage", "Breakage (expired credits)"),
    SystemAccount.CLAWBACKS: ("clawbacks", "Clawbacks (refunds and disputes)"),
    SystemAccount.PROMOTIONS: ("promotions", "Promotional grants"),
    SystemAccount.ADJUSTMENTS: ("adjustments", "Manual adjustments"),
}


def seed_system_accounts(connection: Connection, now: datetime | None = None) -> None:
    """Insert the fixed system accounts (idempotent) and move the id sequence past them."""
    accounts = table_of(Account)
    existing = set(connection.execute(select(accounts.c.id)).scalars())
    created_at = now or utcnow()
    rows = [
        {
            "id": account_id,
            "kind": AccountKind.SYSTEM,
            "code": code,
            "name": name,
            "debt_credits": 0,
            "created_at": created_at,
        }
        for account_id, (code, name) in FIXED_SYSTEM_ACCOUNTS.items()
        if account_id not in existing
    ]
    if rows:
        connection.execute(insert(accounts), rows)
    if connection.dialect.name == "postgresql":
        # Explicit ids do not advance the sequence: move it past them.
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT MAX(id) FROM accounts))")
        )


def usdc_funding_code(chain_id: int) -> str:
    return f"funding:usdc:{chain_id}"


def system_account_id(session: Session, code: str) -> int:
    """The id of the system account with ``code``, creating it on first use (e.g. a newly configured chain).

    Creation runs in a savepoint: when a concurrent transaction created it first, the unique code makes this
    insert fail harmlessly and the row is read again."""
    accounts = table_of(Account)
    lookup = select(accounts.c.id).where(accounts.c.code == code)
    found = session.execute(lookup).scalar()
    if found is not None:
        return int(found)
    # The savepoint rolls back first (inner), then the duplicate is ignored (outer).
    with contextlib.suppress(IntegrityError), session.begin_nested():
        session.execute(
            insert(accounts).values(kind=AccountKind.SYSTEM, code=code, name=code, debt_credits=0, created_at=utcnow())
        )
    return int(session.execute(lookup).scalar_one())
