"""Small pieces every ledger module shares: amount checks, request fingerprints, a lot movement's row, and the
customer lock for the ledger's neighbours (budgets, deposit addresses, crediting). The ledger's rules are in
``plans``."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.errors import InvalidAmount
from services.ledger.plans import require_customer


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


def lock_customer(session: Session, account_id: int, idempotency_key: str | None = None) -> repo.LockedAccount:
    """Lock a customer's account (refusing any other) and read its state."""
    locked = repo.lock_account(session, account_id, idempotency_key)
    require_customer(account_id, None if locked is None else locked.kind)
    assert locked is not None
    return locked
