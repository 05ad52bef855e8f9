"""Starting a card purchase, and what the customer sees of their purchases.

Starting is three steps, never a Stripe call inside a transaction:

1. one unit of work records the purchase (pending), unique per (account, Idempotency-Key), and commits;
2. outside any transaction, Stripe is asked for the account's Customer (once per account) and a Checkout Session,
   with the idempotency key ``purchase:<id>`` so that any retry gets the same session back;
3. another unit of work attaches the session's id and URL (pending -> open).

When step 2 fails the purchase stays pending with the error recorded, and the customer's retry with the same
Idempotency-Key repeats step 2 with the same Stripe idempotency key: nothing is created, or charged, twice.
A session Stripe made without a URL (nowhere to send the customer) is a Stripe error too, but a final one: the
purchase fails, with the session's id kept.

This module holds each step's record and rule, in the caller's session; the function that runs the three steps,
each in its own unit of work, is services.card.flows.checkout.start_checkout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.card import repository as repo
from services.card.errors import PurchaseNotFound
from services.card.models import PurchaseKind, PurchaseStatus
from services.card.packs import Pack
from services.card.rows import PurchaseRow
from services.card.schemas import PurchaseOut
from services.card.stripe_objects import (
    ACCOUNT_ID_KEY,
    CREDITS_KEY,
    PACK_KEY,
    PURCHASE_ID_KEY,
    CheckoutSessionData,
    card_label,
    from_unix,
)
from services.core.errors import Conflict, CreditrailError, IdempotencyKeyReused
from services.core.settings import Settings
from services.core.urls import purchase_cancelled_url, purchase_complete_url
from services.ledger.accounts import require_customer_account
from services.ledger.common import fingerprint
from services.ledger.history import HistoryItem
from services.ledger.models import Rail

CURRENCY = "usd"


class PurchaseView(PurchaseOut):
    """A purchase as the card rail handles it: its API shape plus the account it belongs to."""

    account_id: int

    @property
    def reference(self) -> str | None:
        """The Stripe object the purchase is known by (its Checkout Session, or its PaymentIntent)."""
        return self.checkout_session_id or self.payment_intent_id


def view(row: PurchaseRow) -> PurchaseView:
    fields = {**row._asdict(), "currency": CURRENCY, "card_label": card_label(row.card_brand, row.card_last4)}
    return PurchaseView.model_validate(fields)


def purchase_metadata(purchase: PurchaseRow) -> dict[str, str]:
    """What we tell Stripe about a purchase (on the Checkout Session and its PaymentIntent alike)."""
    return {
        PURCHASE_ID_KEY: str(purchase.id),
        ACCOUNT_ID_KEY: str(purchase.account_id),
        CREDITS_KEY: str(purchase.amount_credits),
        PACK_KEY: str(purchase.pack),
    }


# --- step 1 and 3: our side --------------------------------------------------------------------------------


def record_checkout_purchase(
    session: Session, *, account_id: int, pack: Pack, save_card: bool, idempotency_key: str, now: datetime
) -> tuple[PurchaseRow, bool]:
    """The purchase for this Idempotency-Key: recorded now (pending), or the one recorded before for the same
    request. Returns (row, created); a key reused for another request is refused."""
    require_customer_account(session, account_id)
    request_hash = fingerprint(pack=pack.code, credits=pack.amount_credits, save_card=save_card)
    # Namespaced, so that no customer key can collide with auto-recharge's "auto-recharge:<n>".
    key = f"checkout:{idempotency_key}"
    existing = repo.purchase_by_key(session, account_id, key)
    if existing is None:
        purchase_id = repo.insert_purchase(
            session,
            {
                "account_id": account_id,
                "kind": PurchaseKind.CHECKOUT,
                "pack": pack.code,
                "amount_credits": pack.amount_credits,
                "amount_cents": pack.amount_cents,
                "status": PurchaseStatus.PENDING,
                "idempotency_key": key,
                "request_hash": request_hash,
                "save_card": save_card,
                "refunded_cents": 0,
                "stripe_attempts": 0,
                "created_at": now,
                "updated_at": now,
            },
        )
        if purchase_id is not None:
            return repo.require_purchase(session, purchase_id), True
        existing = repo.purchase_by_key(session, account_id, key)
    assert existing is not None  # the insert above found it there
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this idempotency key was already used for another purchase", idempotency_key=idempotency_key
        )
    return existing, False


def ensure_customer(session: Session, account_id: int, stripe_customer_id: str, now: datetime) -> str:
    """Record the account's Stripe customer (the first recorded wins) and return the one on record."""
    repo.insert_customer(session, account_id, stripe_customer_id, now)
    customer = repo.get_customer(session, account_id)
    assert customer is not None  # inserted above, or there already
    return str(customer.stripe_customer_id)


def attach_checkout_session(
    session: Session, purchase_id: int, data: CheckoutSessionData, now: datetime
) -> PurchaseRow:
    """Attach the Checkout Session Stripe made for a pending purchase (pending -> open)."""
    row = repo.require_purchase(session, purchase_id, lock=True)
    if row.checkout_session_id not in (None, data.id):
        raise Conflict(
            f"purchase {purchase_id} already has another Checkout Session",
            purchase_id=purchase_id,
            checkout_session_id=row.checkout_session_id,
        )
    values: dict[str, Any] = {"checkout_session_id": data.id, "updated_at": now, "last_error": None}
    if data.url:
        values["checkout_url"] = data.url
    if data.expires_at is not None:
        values["checkout_expires_at"] = from_unix(data.expires_at)
    if data.customer:
        values["stripe_customer_id"] = data.customer
    if row.status == PurchaseStatus.PENDING:
        values["status"] = PurchaseStatus.OPEN
    repo.update_purchase(session, purchase_id, **values)
    return repo.require_purchase(session, purchase_id)


def record_unusable_session(
    session: Session, purchase_id: int, data: CheckoutSessionData, error: CreditrailError, now: datetime
) -> PurchaseRow:
    """Stripe made a Checkout Session the customer cannot be sent to (it has no URL): the purchase fails, keeping
    the session's id (should it be paid all the same, its completion still finds the purchase and mints)."""
    row = repo.require_purchase(session, purchase_id, lock=True)
    if row.status != PurchaseStatus.PENDING:
        return row
    values: dict[str, Any] = {
        "status": PurchaseStatus.FAILED,
        "failure_code": "checkout_unavailable",
        "failure_message": "The payment page could not be opened. Please start the purchase again.",
        "stripe_attempts": row.stripe_attempts + 1,
        "last_error": f"{error.code}: {error.message}"[:500],
        "updated_at": now,
    }
    if row.checkout_session_id is None and repo.purchase_by_session(session, data.id) is None:
        values["checkout_session_id"] = data.id
    repo.update_purchase(session, purchase_id, **values)
    return repo.require_purchase(session, purchase_id)


def record_start_failure(session: Session, purchase_id: int, error: CreditrailError, now: datetime) -> None:
    """The purchase stays pending (retryable); the error is kept for the customer and for operators."""
    row = repo.require_purchase(session, purchase_id, lock=True)
    repo.update_purchase(
        session,
        purchase_id,
        stripe_attempts=row.stripe_attempts + 1,
        last_error=f"{error.code}: {error.message}"[:500],
        updated_at=now,
    )


# --- step 2: what Stripe is asked for ----------------------------------------------------------------------


def checkout_session_params(purchase: Any, stripe_customer_id: str, settings: Settings) -> dict[str, Any]:
    """A Checkout Session in payment mode for the purchase's price, on the account's Customer."""
    metadata = purchase_metadata(purchase)
    intent_data: dict[str, Any] = {"metadata": metadata}
    if purchase.save_card:
        intent_data["setup_future_usage"] = "off_session"
    name = "Custom" if purchase.pack == "custom" else purchase.pack.capitalize()
    return {
        "mode": "payment",
        "customer": stripe_customer_id,
        "client_reference_id": str(purchase.id),
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": CURRENCY,
                    "unit_amount": purchase.amount_cents,
                    "product_data": {"name": f"{name} pack: {purchase.amount_credits:,} credits"},
                },
            }
        ],
        "metadata": metadata,
        "payment_intent_data": intent_data,
        "success_url": purchase_complete_url(
            settings, {"purchase_id": str(purchase.id), "session_id": "{CHECKOUT_SESSION_ID}"}
        ),
        "cancel_url": purchase_cancelled_url(settings, {"purchase_id": str(purchase.id)}),
    }


# --- reading -----------------------------------------------------------------------------------------------


def get_purchase(session: Session, account_id: int, purchase_id: int) -> PurchaseView:
    row = repo.get_purchase(session, purchase_id)
    if row is None or row.account_id != account_id:
        raise PurchaseNotFound(f"purchase {purchase_id} not found", purchase_id=purchase_id)
    return view(row)


def _card_details(purchase: PurchaseView) -> dict[str, str]:
    """The card that paid, in a history item's details, once known."""
    if purchase.card_label is None:
        return {}
    return {
        "card_brand": purchase.card_brand or "",
        "card_last4": purchase.card_last4 or "",
        "card_label": purchase.card_label,
    }


def history(
    session: Session, account_id: int, *, limit: int, before: datetime | None = None, before_id: int | None = None
) -> list[HistoryItem]:
    """The account's card purchases, newest first."""
    require_customer_account(session, account_id)
    rows = repo.list_purchases(session, account_id, limit=limit, before=before, before_id=before_id)
    items = []
    for row in rows:
        purchase = view(row)
        items.append(
            HistoryItem(
                rail=Rail.CARD,
                id=purchase.id,
                reference=purchase.reference,
                amount_cents=purchase.amount_cents,
                amount_usdc_units=None,
                credits=purchase.amount_credits,
                status=purchase.status,
                created_at=purchase.created_at,
                completed_at=purchase.completed_at,
                lot_id=purchase.lot_id,
                refunded_cents=purchase.refunded_cents,
                failure_code=purchase.failure_code,
                failure_message=purchase.failure_message,
                details={"kind": purchase.kind, "pack": purchase.pack} | _card_details(purchase),
            )
        )
    return items
