"""Helpers shared by the ledger tests: accounts, mints, reading rows back, and counting what was written."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from services.apikeys.models import ApiKey
from services.app.models import metadata
from services.core.db import table_of, unit_of_work
from services.core.errors import CreditrailError
from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.accounts import create_customer_account
from services.ledger.balance import Balance, get_balance
from services.ledger.invariants import Violation, check_invariants
from services.ledger.minting import MintResult, grant, mint
from services.ledger.models import Rail
from services.ledger.system_accounts import SystemAccount

# A Wednesday, mid-month, mid-day: far from every period boundary.
T0 = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)

api_keys = table_of(ApiKey)


def new_account(engine: Engine, name: str = "customer", now: datetime = T0) -> int:
    with unit_of_work(engine) as session:
        return create_customer_account(session, name=name, now=now)


def mint_card(
    engine: Engine,
    account_id: int,
    amount_credits: int,
    *,
    at: datetime = T0,
    ref: str | None = None,
    expires_at: datetime | None = None,
) -> MintResult:
    """A card purchase of ``amount_credits`` (one credit per cent) credited at ``at``."""
    with unit_of_work(engine) as session:
        return mint(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            rail=Rail.CARD,
            external_ref=ref or f"cs_test_{uuid.uuid4().hex}",
            funding_account_id=SystemAccount.FUNDING_CARD,
            cost_basis_cents=amount_credits,
            credited_at=at,
            expires_at=expires_at,
        )


def grant_credits(
    engine: Engine, account_id: int, amount_credits: int, *, at: datetime = T0, expires_at: datetime | None = None
) -> MintResult:
    with unit_of_work(engine) as session:
        return grant(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=uuid.uuid4().hex,
            expires_at=expires_at,
            reason="promotion",
            now=at,
        )


def new_api_key(engine: Engine, account_id: int) -> int:
    with unit_of_work(engine) as session:
        key_id = session.execute(
            insert(api_keys)
            .values(
                prefix=f"cr_{uuid.uuid4().hex[:16]}",
                secret_sha256="0" * 64,
                role="customer",
                account_id=account_id,
                name="test key",
                created_at=T0,
            )
            .returning(api_keys.c.id)
        ).scalar_one()
        return int(key_id)


def lot_row(engine: Engine, lot_id: int) -> Any:
    with unit_of_work(engine) as session:
        return repo.get_lot(session, lot_id)


def hold_row(engine: Engine, hold_id: int) -> Any:
    with unit_of_work(engine) as session:
        return repo.get_hold(session, hold_id)


def debt_of(engine: Engine, account_id: int) -> int:
    with unit_of_work(engine) as session:
        account = repo.get_account(session, account_id)
        assert account is not None
        return int(account.debt_credits)


def ledger_balance(engine: Engine, account_id: int) -> int:
    with unit_of_work(engine) as session:
        return repo.ledger_balance(session, account_id)


def balance_of(engine: Engine, account_id: int, now: datetime = T0) -> Balance:
    with unit_of_work(engine) as session:
        return get_balance(session, account_id, now)


def entries_of(engine: Engine, transaction_id: int) -> dict[int, int]:
    """{account id: signed credits} of a journal transaction."""
    with unit_of_work(engine) as session:
        legs: dict[int, int] = {}
        for row in repo.transaction_entries(session, transaction_id):
            legs[row.account_id] = legs.get(row.account_id, 0) + row.amount_credits
        return legs


def transaction_of(engine: Engine, transaction_id: int) -> Any:
    with unit_of_work(engine) as session:
        return repo.get_transaction(session, transaction_id)


def movements_of(engine: Engine, transaction_id: int) -> list[tuple[int, str, int]]:
    """(lot id, kind, signed credits) of every lot movement a transaction made, in order."""
    with unit_of_work(engine) as session:
        return [(m.lot_id, m.kind, m.amount_credits) for m in repo.transaction_movements(session, transaction_id)]


def transactions_of_kind(engine: Engine, kind: str) -> list[Any]:
    with unit_of_work(engine) as session:
        t = repo.transactions
        return list(session.execute(select(t).where(t.c.kind == kind).order_by(t.c.id)).all())


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table: equal before and after means nothing was written."""
    with unit_of_work(engine) as session:
        return {
            table.name: int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in metadata.sorted_tables
        }


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered: equal before and after means nothing was written or changed."""
    with unit_of_work(engine) as session:
        return {
            table.name: [
                tuple(row) for row in session.execute(select(table).order_by(*table.primary_key.columns)).all()
            ]
            for table in metadata.sorted_tables
        }


def violations(engine: Engine) -> list[Violation]:
    with unit_of_work(engine) as session:
        return check_invariants(session)


def violated(engine: Engine) -> set[str]:
    return {violation.invariant for violation in violations(engine)}


def bad_amounts(*, allow_zero: bool = False) -> list[Any]:
    """Amounts the ledger refuses: not positive, not a whole number, not a number at all, above the maximum."""
    amounts: list[Any] = [-1, -500, True, False, 1.0, 2.5, "10", None, get_settings().max_amount_credits + 1]
    return amounts if allow_zero else [0, *amounts]


def refusals(engine: Engine, attempt: Callable[[Any], object], values: list[Any]) -> dict[str, str]:
    """{repr(value): the error code ``attempt(value)`` raised} for each value, "accepted" when it raised nothing,
    with " (and wrote)" appended when the database changed regardless."""
    outcomes: dict[str, str] = {}
    for value in values:
        before = snapshot(engine)
        try:
            attempt(value)
            outcome = "accepted"
        except CreditrailError as refused:
            outcome = refused.code
        outcomes[repr(value)] = outcome if snapshot(engine) == before else f"{outcome} (and wrote)"
    return outcomes
