"""Auto-recharge (opt-in): a saved card, a threshold and a pack. When the balance falls below the threshold, the
worker charges the saved card off-session, once per crossing.

A crossing is the balance going from at-or-above the threshold (the settings are "armed") to below it. The worker
sees it, disarms, and records a pending purchase for crossing number n (unique per account and n); the
PaymentIntent is then created outside any transaction with the idempotency key ``auto-recharge:<account>:<n>``,
so a retry after a timeout or a crash charges nothing twice. The settings re-arm once the balance is back at or
above the threshold. A decline or a bank asking for authentication fails the purchase, is shown to the customer
through the API, and after ``card_auto_recharge_max_failures`` failures in a row auto-recharge turns itself off.
A success mints once per PaymentIntent, whether the worker or the ``payment_intent.succeeded`` webhook gets there
first.

This module decides, in the caller's session (the settings, the crossings, what is due); the worker's pass that
charges through Stripe between units of work is services.card.flows.auto_recharge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.card import repository as repo
from services.card.errors import NoSavedCard
from services.card.models import PurchaseKind, PurchaseStatus
from services.card.packs import get_pack
from services.card.purchases import CURRENCY, purchase_metadata
from services.card.schemas import AutoRechargeOut
from services.card.stripe_objects import KIND_KEY
from services.ledger.accounts import require_customer_account
from services.ledger.balance import get_balance
from services.ledger.common import fingerprint

DEFAULT_PACK = "standard"
# Calls to Stripe that may fail (it is down) before an off-session charge is given up.
MAX_STRIPE_ATTEMPTS = 5


def get_view(session: Session, account_id: int) -> AutoRechargeOut:
    require_customer_account(session, account_id)
    row = repo.get_auto_recharge(session, account_id)
    customer = repo.get_customer(session, account_id)
    has_card = customer is not None and customer.payment_method_id is not None
    if row is None:
        pack = get_pack(DEFAULT_PACK)
        return AutoRechargeOut(
            enabled=False,
            threshold_credits=0,
            pack=pack.code,
            amount_credits=pack.amount_credits,
            amount_cents=pack.amount_cents,
            has_saved_card=has_card,
            armed=True,
            crossings=0,
            consecutive_failures=0,
            last_failure_code=None,
            last_failure_message=None,
            last_failure_at=None,
            disabled_reason=None,
            last_purchase_id=None,
            updated_at=None,
        )
    return AutoRechargeOut.model_validate({**row._asdict(), "has_saved_card": has_card})


def configure(
    session: Session, account_id: int, *, enabled: bool, threshold_credits: int, pack: str, now: datetime
) -> AutoRechargeOut:
    """Save the customer's auto-recharge settings. Turning it on needs a saved card; turning it on again (after
    it turned itself off) clears the failure count and arms it."""
    require_customer_account(session, account_id)
    chosen = get_pack(pack)
    customer = repo.get_customer(session, account_id)
    if enabled and (customer is None or customer.payment_method_id is None):
        raise NoSavedCard(
            "auto-recharge needs a saved card: buy a pack by card with save_card=true first", field="enabled"
        )
    values: dict[str, Any] = {
        "enabled": enabled,
        "threshold_credits": threshold_credits,
        "pack": chosen.code,
        "amount_credits": chosen.amount_credits,
        "amount_cents": chosen.amount_cents,
        "updated_at": now,
    }
    row = repo.get_auto_recharge(session, account_id, lock=True)
    if row is None:
        repo.insert_auto_recharge(
            session,
            values
            | {"account_id": account_id, "armed": True, "crossings": 0, "consecutive_failures": 0, "created_at": now},
        )
    else:
        if enabled and not row.enabled:
            values |= {"armed": True, "consecutive_failures": 0, "disabled_reason": None}
        repo.update_auto_recharge(session, account_id, **values)
    return get_view(session, account_id)


def detect_crossings(session: Session, *, after_account_id: int, limit: int, now: datetime) -> tuple[int, int, int]:
    """One page of enabled auto-recharges: record a pending purchase for each new crossing, re-arm those back at
    or above their threshold. Returns (rows seen, purchases recorded, last account id)."""
    rows = repo.enabled_auto_recharges(session, after_account_id=after_account_id, limit=limit)
    recorded = 0
    for row in rows:
        available = get_balance(session, row.account_id, now).available_credits
        if row.armed and available < row.threshold_credits:
            crossing = row.crossings + 1
            key = f"auto-recharge:{crossing}"
            purchase_id = repo.insert_purchase(
                session,
                {
                    "account_id": row.account_id,
                    "kind": PurchaseKind.AUTO_RECHARGE,
                    "pack": row.pack,
                    "amount_credits": row.amount_credits,
                    "amount_cents": row.amount_cents,
                    "status": PurchaseStatus.PENDING,
                    "idempotency_key": key,
                    "request_hash": fingerprint(crossing=crossing, pack=row.pack, credits=row.amount_credits),
                    "save_card": False,
                    "crossing": crossing,
                    "refunded_cents": 0,
                    "stripe_attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            existing = purchase_id or repo.require_purchase_by_key(session, row.account_id, key).id
            repo.update_auto_recharge(
                session, row.account_id, armed=False, crossings=crossing, last_purchase_id=existing, updated_at=now
            )
            recorded += 1 if purchase_id is not None else 0
        elif not row.armed and available >= row.threshold_credits:
            repo.update_auto_recharge(session, row.account_id, armed=True, updated_at=now)
    last = rows[-1].account_id if rows else after_account_id
    return len(rows), recorded, last


@dataclass(frozen=True, slots=True)
class DueCharge:
    purchase_id: int
    account_id: int
    crossing: int
    amount_cents: int
    stripe_attempts: int
    customer_id: str | None
    payment_method_id: str | None
    params: dict[str, Any]


def due_charges(session: Session, limit: int) -> list[DueCharge]:
    """Pending auto-recharge purchases, with what Stripe needs to charge them."""
    due = []
    for row in repo.pending_auto_recharge_purchases(session, limit):
        customer = repo.get_customer(session, row.account_id)
        customer_id = customer.stripe_customer_id if customer is not None else None
        method = customer.payment_method_id if customer is not None else None
        params = {
            "amount": row.amount_cents,
            "currency": CURRENCY,
            "customer": customer_id,
            "payment_method": method,
            "off_session": True,
            "confirm": True,
            "description": f"Auto-recharge: {row.amount_credits:,} credits",
            "metadata": purchase_metadata(row) | {KIND_KEY: PurchaseKind.AUTO_RECHARGE},
        }
        due.append(
            DueCharge(
                purchase_id=row.id,
                account_id=row.account_id,
                crossing=row.crossing or 0,
                amount_cents=row.amount_cents,
                stripe_attempts=row.stripe_attempts,
                customer_id=customer_id,
                payment_method_id=method,
                params=params,
            )
        )
    return due
