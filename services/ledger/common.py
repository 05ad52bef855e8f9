"""Small pieces every ledger operation shares: amount checks, request fingerprints, the customer lock, and the
draw-down rules (which lots give a spend or hold, what resolving a hold draws and expires) that the Core path and
the PostgreSQL fast path (``pg_fastpath``) both apply."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.errors import IdempotencyKeyReused
from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.errors import AccountNotFound, InsufficientCredits, InvalidAmount, NotACustomerAccount
from services.ledger.models import AccountKind


def require_amount(amount_credits: int, *, name: str = "amount_credits", allow_zero: bool = False) -> int:
    """A whole, positive number of credits within the configured maximum (bools and floats refused)."""
    if isinstance(amount_credits, bool) or not isinstance(amount_credits, int):
        raise InvalidAmount(f"{name} must be a whole number of credits", field=name)
    low = 0 if allow_zero else 1
    maximum = get_settings().max_amount_credits
    if not low <= amount_credits <= maximum:
        raise InvalidAmount(f"{name} must be between {low} and {maximum}", field=name, value=amount_credits)
    return amount_credits


def movement_row(
    lot_id: int,
    transaction_id: int,
    kind: str,
    amount_credits: int,
    now: datetime,
    hold_id: int | None = None,
) -> dict[str, Any]:
    """A row of ``lot_movements``: a signed change to a lot's remaining credits and why."""
    return {
        "lot_id": lot_id,
        "transaction_id": transaction_id,
        "kind": kind,
        "amount_credits": amount_credits,
        "hold_id": hold_id,
        "created_at": now,
    }


def fingerprint(**fields: Any) -> str:
    """A stable digest of a request's meaningful fields, to tell a retry from a reused idempotency key."""
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def require_customer(account_id: int, kind: str | None) -> None:
    """Refuse an account that does not exist (``kind`` None) or is not a customer's."""
    if kind is None:
        raise AccountNotFound(f"account {account_id} does not exist", account_id=account_id)
    if kind != AccountKind.CUSTOMER:
        raise NotACustomerAccount(f"account {account_id} is not a customer account", account_id=account_id)


def lock_customer(session: Session, account_id: int, idempotency_key: str | None = None) -> repo.LockedAccount:
    locked = repo.lock_account(session, account_id, idempotency_key)
    require_customer(account_id, None if locked is None else locked.kind)
    assert locked is not None
    return locked


def check_replay(locked: repo.LockedAccount, request_hash: str, idempotency_key: str) -> int | None:
    """The transaction id to replay when the key was used before by the same request; raises when the key was
    used by a different one; None when the key is new."""
    if locked.existing_transaction_id is None:
        return None
    check_same_request(locked.existing_request_hash, request_hash, idempotency_key)
    return locked.existing_transaction_id


def check_same_request(used_request_hash: str | None, request_hash: str, idempotency_key: str) -> None:
    """Refuse an idempotency key already used by a different request (a retry of the same request replays)."""
    if used_request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this idempotency key was already used with a different request", idempotency_key=idempotency_key
        )


def debt_repaid(debt_credits: int, amount_credits: int) -> int:
    """What a mint of ``amount_credits`` repays of the account's debt: the debt comes first."""
    return min(debt_credits, amount_credits)


def plan_draws(candidates: Sequence[tuple[int, int]], amount_credits: int, debt_credits: int) -> list[tuple[int, int]]:
    """Which of ``candidates`` give ``amount_credits``: (lot id, credits) in draw-down order.

    ``candidates`` are (lot id, unreserved credits) of the account's live lots in draw-down order (soonest expiry,
    then oldest credited, then lowest id), as many as cover ``amount_credits`` plus the debt, or all of them when
    the account holds less. The debt must stay covered, so a customer in debt can only spend what exceeds it."""
    needed = amount_credits + debt_credits
    free = sum(credits for _, credits in candidates)
    if free < needed:
        raise InsufficientCredits(
            f"{amount_credits} credits requested, {max(0, free - debt_credits)} available",
            requested_credits=amount_credits,
            available_credits=max(0, free - debt_credits),
        )
    plan: list[tuple[int, int]] = []
    left = amount_credits
    for lot_id, credits in candidates:
        if left == 0:
            break
        take = min(credits, left)
        plan.append((lot_id, take))
        left -= take
    return plan


def split_reservation(
    allocations: Iterable[tuple[int, int, datetime]], capture_credits: int, now: datetime
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """How a hold resolves: ``allocations`` are its (lot id, reserved credits, lot's expiry) in reserved order.

    Returns (draws, expiring): ``capture_credits`` drawn from the lots in that order, and what the hold frees on
    lots whose time has come, which expires at once."""
    draws: list[tuple[int, int]] = []
    expiring: list[tuple[int, int]] = []
    left = capture_credits
    for lot_id, reserved, expires_at in allocations:
        take = min(reserved, left)
        left -= take
        if take:
            draws.append((lot_id, take))
        freed = reserved - take
        if freed and expires_at <= now:
            expiring.append((lot_id, freed))
    return draws, expiring
