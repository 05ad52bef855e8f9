"""Working the exceptions queue: each way of closing an exception leaves history as it was and adds to it.

- ``mint``: mint the missing lot (an external payment or transfer the ledger never credited). The lot carries the
  reference the rail itself would have used, so the mint is idempotent with the rail's own: whichever comes first
  mints, the other finds the lot.
- ``clawback``: claw back a lot whose external record does not exist (or is smaller than what was credited).
- ``ignore``: close it with the reason, nothing else.
- ``note``: close it as resolved with what was done elsewhere (at Stripe, on the chain), nothing else in the ledger.

Nothing here commits: the request or command that resolves the exception does, with the ledger transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import Conflict, InvalidRequest
from services.core.money import cents_to_credits, credits_to_usdc_units
from services.finance.models import ItemCategory
from services.finance.runs import CARD_RAIL, EXCEPTION_KIND_PREFIX
from services.ledger.clawback import clawback
from services.ledger.minting import mint
from services.ledger.repository import lots
from services.ledger.system_accounts import SystemAccount
from services.review.errors import FinanceExceptionClosed
from services.review.models import ExceptionStatus
from services.review.schemas import ExceptionOut
from services.review.service import close_exception, exceptions_table, get_exception
from services.usdc.crediting import funding_account


class Action(StrEnum):
    MINT = "mint"
    CLAWBACK = "clawback"
    IGNORE = "ignore"
    NOTE = "note"


class ActionNotApplicable(Conflict):
    code = "finance_action_not_applicable"


def resolve(
    session: Session,
    exception_id: int,
    *,
    action: str,
    reason: str,
    resolved_by: str,
    account_id: int | None = None,
    amount_credits: int | None = None,
    now: datetime | None = None,
) -> ExceptionOut:
    """Close an open exception with ``action``; ``account_id`` and ``amount_credits`` override what the exception
    knows (a mint into the right account, a partial clawback)."""
    now = now or utcnow()
    if not reason or not reason.strip():
        raise InvalidRequest("resolving an exception needs a reason", field="reason")
    try:
        chosen = Action(action)
    except ValueError:
        raise InvalidRequest(f"action must be one of {', '.join(a.value for a in Action)}", field="action") from None
    current = _lock_open(session, exception_id)
    transaction_id: int | None = None
    status: str = ExceptionStatus.RESOLVED
    if chosen is Action.MINT:
        transaction_id = _mint_missing(session, current, account_id, amount_credits, reason, now)
    elif chosen is Action.CLAWBACK:
        transaction_id = _claw_back(session, current, amount_credits, reason, now)
    elif chosen is Action.IGNORE:
        status = ExceptionStatus.IGNORED
    closed = close_exception(
        session, exception_id, status=status, resolved_by=resolved_by, resolution=reason.strip(), now=now
    )
    session.execute(
        update(exceptions_table)
        .where(exceptions_table.c.id == exception_id)
        .values(action=chosen.value, transaction_id=transaction_id)
    )
    return get_exception(session, closed.id)


def _lock_open(session: Session, exception_id: int) -> ExceptionOut:
    """The exception, its row locked so two people resolving it at once cannot both act."""
    x = exceptions_table
    session.execute(select(x.c.id).where(x.c.id == exception_id).with_for_update())
    current = get_exception(session, exception_id)
    if current.status != ExceptionStatus.OPEN:
        raise FinanceExceptionClosed(f"finance exception {exception_id} is already {current.status}")
    return current


def _detail(current: ExceptionOut, name: str) -> Any:
    return current.details.get(name) if isinstance(current.details, dict) else None


def _mint_missing(
    session: Session,
    current: ExceptionOut,
    account_id: int | None,
    amount_credits: int | None,
    reason: str,
    now: datetime,
) -> int:
    if current.kind != f"{EXCEPTION_KIND_PREFIX}{ItemCategory.MISSING_IN_LEDGER}":
        raise ActionNotApplicable("only a payment or transfer missing in the ledger can be minted", kind=current.kind)
    lot_ref = _detail(current, "lot_ref")
    account = account_id if account_id is not None else current.account_id
    if not lot_ref:
        raise ActionNotApplicable("this exception does not name the reference a lot would carry")
    if account is None:
        raise InvalidRequest("the account to credit is not known; give account_id", field="account_id")
    details = {"finance_exception_id": current.id, "reason": reason}
    if current.rail == CARD_RAIL:
        if current.amount_cents is None:
            raise ActionNotApplicable("this exception does not carry the amount paid")
        credits = amount_credits if amount_credits is not None else cents_to_credits(current.amount_cents)
        minted = mint(
            session,
            account_id=account,
            amount_credits=credits,
            rail="card",
            external_ref=str(lot_ref),
            funding_account_id=SystemAccount.FUNDING_CARD,
            cost_basis_cents=current.amount_cents,
            credited_at=now,
            description=f"Minted by finance: {reason}"[:500],
            details=details,
        )
        return minted.transaction_id
    chain_id = int(str(lot_ref).split(":", 1)[0])
    credits = amount_credits if amount_credits is not None else _detail(current, "expected_credits")
    if not isinstance(credits, int) or credits <= 0:
        raise InvalidRequest("give amount_credits: this transfer is worth no whole credit", field="amount_credits")
    minted = mint(
        session,
        account_id=account,
        amount_credits=credits,
        rail="usdc",
        external_ref=str(lot_ref),
        funding_account_id=funding_account(session, chain_id),
        cost_basis_usdc_units=credits_to_usdc_units(credits),
        credited_at=now,
        description=f"Minted by finance: {reason}"[:500],
        details=details,
    )
    return minted.transaction_id


def _claw_back(session: Session, current: ExceptionOut, amount_credits: int | None, reason: str, now: datetime) -> int:
    lot_id = _detail(current, "lot_id")
    if not isinstance(lot_id, int):
        raise ActionNotApplicable("this exception names no lot to claw back")
    lot = session.execute(select(lots).where(lots.c.id == lot_id)).first()
    if lot is None:
        raise ActionNotApplicable("the lot this exception names does not exist", lot_id=lot_id)
    clawable = int(lot.credits) - int(lot.clawed_back_credits)
    if amount_credits is None:
        ledger_credits = _detail(current, "ledger_credits")
        expected = _detail(current, "expected_credits")
        if isinstance(ledger_credits, int) and isinstance(expected, int) and ledger_credits > expected:
            amount_credits = ledger_credits - expected
        else:
            amount_credits = clawable
    if amount_credits <= 0:
        raise ActionNotApplicable("there is nothing left to claw back from this lot", lot_id=lot_id)
    result = clawback(
        session,
        lot_id=lot_id,
        amount_credits=amount_credits,
        idempotency_key=f"finance:{current.id}",
        reason=f"Finance: {reason}"[:500],
        now=now,
    )
    return result.transaction_id
