"""Fulfilment: the one idempotent path from "Stripe says paid" to minted credits.

:func:`fulfil_checkout_session` is called alike by the webhook's inbox, the success page and the sync job, each
with the Checkout Session as Stripe showed it to them. It mints only when ``payment_status`` is ``paid`` and the
amount paid is exactly the purchase's price in USD; otherwise it records why. The purchase row is locked first, the
mint is unique per (card, Checkout Session id) in the ledger, so any number of concurrent callers mint once.

Auto-recharge's off-session PaymentIntents take :func:`fulfil_payment_intent` (unique per PaymentIntent id), from the
``payment_intent.succeeded`` webhook or the worker reading the PaymentIntent it created, whichever comes first.

Anything we cannot match to a purchase of ours (an unknown purchase or account, another amount) is a finance
exception; nothing is minted for it. Nothing here commits or calls Stripe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.alerts.service import record_auto_recharge_failed
from services.card import repository as repo
from services.card.models import UNFINISHED_STATUSES, PurchaseKind, PurchaseStatus
from services.card.outcome import Outcome, exception_outcome
from services.card.refunds import settle
from services.card.rows import PurchaseRow
from services.card.stripe_objects import (
    ACCOUNT_ID_KEY,
    CardDetails,
    ChargeData,
    CheckoutSessionData,
    PaymentIntentData,
    from_unix,
    metadata_int,
)
from services.core.settings import get_settings
from services.events.emit import record_purchase_completed
from services.ledger.minting import mint
from services.ledger.models import Rail
from services.ledger.system_accounts import SystemAccount
from services.outbox.service import record_receipt
from services.review.service import card_reference, raise_exception

RAIL = "card"
CURRENCY = "usd"


# What a customer reads when an off-session charge did not go through.
FAILURE_MESSAGES = {
    "authentication_required": "Your bank asked to confirm this payment. Buy a pack by card once to confirm your "
    "card; auto-recharge will then work again.",
    "insufficient_funds": "The card was declined for insufficient funds.",
    "expired_card": "The saved card has expired. Buy a pack with a new card and save it.",
    "card_declined": "The card was declined.",
}


def failure_message(code: str, fallback: str | None = None) -> str:
    return FAILURE_MESSAGES.get(code) or fallback or "The payment did not go through."


def _exception(session: Session, kind: str, reference: str, now: datetime, **fields: Any) -> None:
    details = fields.pop("details", {})
    raise_exception(
        session, rail=RAIL, kind=kind, reference=card_reference(reference), details=details, now=now, **fields
    )


def _purchase_for_session(
    session: Session, data: CheckoutSessionData, now: datetime
) -> tuple[PurchaseRow | None, str | None]:
    """The purchase a Checkout Session belongs to, locked, or the reason there is none."""
    row = repo.purchase_by_session(session, data.id, lock=True)
    if row is not None:
        return row, None
    purchase_id = data.purchase_id
    row = repo.get_purchase(session, purchase_id, lock=True) if purchase_id is not None else None
    if row is None or row.kind != PurchaseKind.CHECKOUT:
        return None, "unknown_purchase"
    if row.checkout_session_id is not None:
        # Ours, but the purchase went on with another session.
        return None, "session_mismatch"
    # The session was made, but we never heard back (a timeout, a crash before step 3): attach it now.
    expires_at = from_unix(data.expires_at) if data.expires_at is not None else None
    repo.update_purchase(session, row.id, checkout_session_id=data.id, checkout_expires_at=expires_at, updated_at=now)
    return repo.get_purchase(session, row.id), None


def _intent_fields(session: Session, purchase: PurchaseRow, intent_id: str | None) -> dict[str, Any]:
    """Record the purchase's PaymentIntent (a Checkout Session has one; it is unique to the session, and so to the
    purchase: the unique constraint would refuse a second purchase claiming it)."""
    if intent_id and purchase.payment_intent_id is None:
        return {"payment_intent_id": intent_id}
    return {}


def _card_fields(purchase: PurchaseRow, card: CardDetails | None) -> dict[str, Any]:
    """Record the card that paid, when the caller learnt it and the purchase does not know it yet."""
    if card is None or purchase.card_brand is not None:
        return {}
    return {"card_brand": card.brand, "card_last4": card.last4}


def note_card(session: Session, charge: ChargeData, *, now: datetime) -> Outcome:
    """``charge.succeeded``: the card that paid, recorded on the purchase the charge is for (by its PaymentIntent,
    or the purchase its metadata names) when the purchase does not know it yet, before or after it mints. Stripe
    sends it beside the Checkout Session's completion, so fulfilment need not ask Stripe for the card; a purchase
    that minted without it (Stripe could not say) gets it now. Anything else is left alone: not ours, no card, or a
    card known already."""
    if charge.card is None:
        return Outcome("no_card")
    purchase = repo.purchase_by_intent(session, charge.payment_intent, lock=True) if charge.payment_intent else None
    if purchase is None and charge.purchase_id is not None:
        named = repo.get_purchase(session, charge.purchase_id, lock=True)
        account_id = metadata_int(charge.metadata, ACCOUNT_ID_KEY)
        if (
            named is not None
            and named.payment_intent_id in (None, charge.payment_intent)
            and account_id in (None, named.account_id)
        ):
            purchase = named
    if purchase is None:
        return Outcome("not_ours")
    if purchase.card_brand is not None:
        return Outcome("card_known", purchase.id, purchase.lot_id)
    repo.update_purchase(session, purchase.id, updated_at=now, **_card_fields(purchase, charge.card))
    return Outcome("card_noted", purchase.id, purchase.lot_id)


def fulfil_checkout_session(session: Session, data: CheckoutSessionData, *, now: datetime) -> Outcome:
    """Mint the purchase a paid Checkout Session is for, once; otherwise record why not."""
    purchase, problem = _purchase_for_session(session, data, now)
    if purchase is None:
        assert problem is not None
        _exception(
            session,
            problem,
            data.id,
            now,
            account_id=metadata_int(data.metadata, ACCOUNT_ID_KEY),
            amount_cents=data.amount_total,
            details={
                "payment_status": data.payment_status,
                "status": data.status,
                "currency": data.currency,
                "metadata": data.metadata,
                "client_reference_id": data.client_reference_id,
            },
        )
        return exception_outcome(problem)
    named_account = metadata_int(data.metadata, ACCOUNT_ID_KEY)
    if named_account is not None and named_account != purchase.account_id:
        _exception(
            session,
            "account_mismatch",
            data.id,
            now,
            account_id=purchase.account_id,
            amount_cents=data.amount_total,
            details={"purchase_id": purchase.id, "metadata_account_id": named_account},
        )
        return exception_outcome("account_mismatch", purchase.id)
    if purchase.status == PurchaseStatus.COMPLETED:
        return Outcome("already_fulfilled", purchase.id, purchase.lot_id)
    if purchase.status == PurchaseStatus.REVIEW:
        return Outcome("under_review", purchase.id)
    values: dict[str, Any] = _intent_fields(session, purchase, data.payment_intent) | _card_fields(purchase, data.card)
    if data.customer and purchase.stripe_customer_id is None:
        values["stripe_customer_id"] = data.customer
    if data.payment_status != "paid":
        return _not_paid(session, purchase, data, values, now)
    paid_cents = data.amount_total
    if paid_cents is None or paid_cents != purchase.amount_cents or data.currency != CURRENCY:
        return _amount_mismatch(session, purchase, data.id, data.amount_total, data.currency, "paid", values, now)
    return _mint(session, purchase, external_ref=data.id, paid_cents=paid_cents, values=values, now=now)


def _amount_mismatch(
    session: Session,
    purchase: PurchaseRow,
    reference: str,
    paid_cents: int | None,
    currency: str | None,
    verb: str,
    values: dict[str, Any],
    now: datetime,
) -> Outcome:
    """Stripe took another amount (or currency) than the purchase's: the purchase goes to review, with a finance
    exception about the Stripe object (``reference``) that says so; nothing is minted."""
    repo.update_purchase(
        session,
        purchase.id,
        status=PurchaseStatus.REVIEW,
        amount_paid_cents=paid_cents,
        failure_code="amount_mismatch",
        failure_message=f"The amount {verb} does not match this purchase; our finance team will look at it.",
        updated_at=now,
        **values,
    )
    _exception(
        session,
        "amount_mismatch",
        reference,
        now,
        account_id=purchase.account_id,
        amount_cents=paid_cents,
        amount_credits=purchase.amount_credits,
        details={"purchase_id": purchase.id, "expected_cents": purchase.amount_cents, "currency": currency},
    )
    return exception_outcome("amount_mismatch", purchase.id)


def _not_paid(
    session: Session, purchase: Any, data: CheckoutSessionData, values: dict[str, Any], now: datetime
) -> Outcome:
    if data.status == "expired":
        values |= {"status": PurchaseStatus.EXPIRED, "failure_code": "expired"}
        values["failure_message"] = "The checkout expired before it was paid."
        code = "expired"
    elif data.status == "complete":
        # A delayed method (a bank debit ...): checkout.session.async_payment_succeeded or _failed follows.
        values |= {"status": PurchaseStatus.PROCESSING, "failure_code": "payment_pending"}
        values["failure_message"] = f"The payment has not settled yet (payment_status={data.payment_status})."
        code = "awaiting_payment"
    else:
        code = "awaiting_payment"
    if values:
        repo.update_purchase(session, purchase.id, updated_at=now, **values)
    return Outcome(code, purchase.id)


def _mint(
    session: Session, purchase: Any, *, external_ref: str, paid_cents: int, values: dict[str, Any], now: datetime
) -> Outcome:
    result = mint(
        session,
        account_id=purchase.account_id,
        amount_credits=purchase.amount_credits,
        rail=Rail.CARD,
        external_ref=external_ref,
        funding_account_id=SystemAccount.FUNDING_CARD,
        cost_basis_cents=paid_cents,
        credited_at=now,
        description=f"Card purchase {purchase.id} ({purchase.pack})",
        details={"purchase_id": purchase.id, "pack": purchase.pack, "kind": purchase.kind},
    )
    repo.update_purchase(
        session,
        purchase.id,
        status=PurchaseStatus.COMPLETED,
        lot_id=result.lot_id,
        amount_paid_cents=paid_cents,
        completed_at=now,
        failure_code=None,
        failure_message=None,
        updated_at=now,
        **values,
    )
    # The receipt and the platform's event, in the mint's transaction (once per lot, however often the purchase is
    # fulfilled: a replay's first mint wrote them), after the purchase row (the worker renders the receipt with the
    # card that paid from there).
    if not result.replayed:
        record_receipt(
            session,
            account_id=purchase.account_id,
            lot_id=result.lot_id,
            now=now,
        )
        record_purchase_completed(
            session,
            account_id=purchase.account_id,
            purchase_id=purchase.id,
            kind=purchase.kind,
            pack=purchase.pack,
            lot_id=result.lot_id,
            amount_credits=purchase.amount_credits,
            amount_usd_cents=paid_cents,
            now=now,
        )
    # A refund or dispute seen before the mint (they record a refunded amount or the charge) is applied now, in
    # the same transaction.
    if purchase.refunded_cents or purchase.charge_id is not None:
        settle(session, purchase.id, now)
    return Outcome("already_fulfilled" if result.replayed else "minted", purchase.id, result.lot_id)


def mark_checkout_expired(session: Session, data: CheckoutSessionData, *, now: datetime) -> Outcome:
    """``checkout.session.expired``: the purchase expires, unless it was paid meanwhile."""
    purchase, _problem = _purchase_for_session(session, data, now)
    if purchase is None:
        return Outcome("unknown_session_expired")
    return _expire(session, purchase, now)


def expire_purchase(session: Session, purchase_id: int, *, now: datetime) -> Outcome:
    """A checkout purchase whose session can no longer be paid (Stripe no longer has it): it expires, unless it
    is finished already."""
    purchase = repo.get_purchase(session, purchase_id, lock=True)
    if purchase is None or purchase.kind != PurchaseKind.CHECKOUT:
        return Outcome("unknown_purchase")
    return _expire(session, purchase, now)


def _expire(session: Session, purchase: PurchaseRow, now: datetime) -> Outcome:
    if purchase.status not in UNFINISHED_STATUSES:
        return Outcome(f"already_{purchase.status}", purchase.id, purchase.lot_id)
    repo.update_purchase(
        session,
        purchase.id,
        status=PurchaseStatus.EXPIRED,
        failure_code="expired",
        failure_message="The checkout expired before it was paid.",
        updated_at=now,
    )
    return Outcome("expired", purchase.id)


def mark_checkout_failed(session: Session, data: CheckoutSessionData, *, now: datetime) -> Outcome:
    """``checkout.session.async_payment_failed``: the delayed payment did not go through."""
    purchase, problem = _purchase_for_session(session, data, now)
    if purchase is None:
        _exception(session, problem or "unknown_purchase", data.id, now, details={"event": "async_payment_failed"})
        return exception_outcome(problem or "unknown_purchase")
    if purchase.status not in UNFINISHED_STATUSES:
        return Outcome(f"already_{purchase.status}", purchase.id, purchase.lot_id)
    repo.update_purchase(
        session,
        purchase.id,
        status=PurchaseStatus.FAILED,
        failure_code="payment_failed",
        failure_message="The payment failed after checkout (the bank refused the debit).",
        updated_at=now,
        **_intent_fields(session, purchase, data.payment_intent),
    )
    return Outcome("failed", purchase.id)


# --- off-session PaymentIntents (auto-recharge) -------------------------------------------------------------


def _purchase_for_intent(session: Session, intent: PaymentIntentData) -> PurchaseRow | None:
    row = repo.purchase_by_intent(session, intent.id, lock=True)
    if row is None and intent.purchase_id is not None:
        row = repo.get_purchase(session, intent.purchase_id, lock=True)
        if row is not None and row.payment_intent_id not in (None, intent.id):
            return None
    return row


def fulfil_payment_intent(session: Session, intent: PaymentIntentData, *, now: datetime) -> Outcome:
    """A succeeded PaymentIntent: mints an auto-recharge purchase once; for a Checkout purchase (which its session
    mints) it only keeps the card the customer chose to save."""
    purchase = _purchase_for_intent(session, intent)
    if purchase is None:
        if intent.purchase_id is None:
            # Not one of ours (no purchase id in its metadata): another integration on the same Stripe account.
            return Outcome("not_ours")
        _exception(
            session,
            "unknown_purchase",
            intent.id,
            now,
            amount_cents=intent.amount_received,
            details={"metadata": intent.metadata},
        )
        return exception_outcome("unknown_purchase")
    values = _intent_fields(session, purchase, intent.id)
    if purchase.kind == PurchaseKind.CHECKOUT:
        saved = purchase.save_card and intent.setup_future_usage == "off_session" and intent.payment_method is not None
        if saved:
            assert intent.payment_method is not None
            repo.save_payment_method(session, purchase.account_id, intent.payment_method, now)
        if values:
            repo.update_purchase(session, purchase.id, updated_at=now, **values)
        return Outcome("card_saved" if saved else "checkout_intent_noted", purchase.id, purchase.lot_id)
    if purchase.status == PurchaseStatus.COMPLETED:
        return Outcome("already_fulfilled", purchase.id, purchase.lot_id)
    if purchase.status == PurchaseStatus.REVIEW:
        return Outcome("under_review", purchase.id)
    if intent.status != "succeeded":
        if values or purchase.status == PurchaseStatus.PENDING:
            repo.update_purchase(session, purchase.id, status=PurchaseStatus.PROCESSING, updated_at=now, **values)
        return Outcome("awaiting_payment", purchase.id)
    if intent.amount_received != purchase.amount_cents or intent.currency != CURRENCY:
        return _amount_mismatch(
            session, purchase, intent.id, intent.amount_received, intent.currency, "charged", values, now
        )
    values |= _card_fields(purchase, intent.card)
    outcome = _mint(session, purchase, external_ref=intent.id, paid_cents=purchase.amount_cents, values=values, now=now)
    repo.update_auto_recharge(session, purchase.account_id, consecutive_failures=0, updated_at=now)
    return outcome


def fail_payment_intent(
    session: Session,
    intent: PaymentIntentData | None,
    *,
    now: datetime,
    purchase_id: int | None = None,
    code: str | None = None,
    message: str | None = None,
    count_failure: bool = True,
) -> Outcome:
    """An off-session charge that did not go through (declined, or the bank wants the customer present): the
    purchase fails once, the customer's auto-recharge counts it, and turns itself off after too many in a row."""
    purchase = _purchase_for_intent(session, intent) if intent is not None else None
    if purchase is None and purchase_id is not None:
        purchase = repo.get_purchase(session, purchase_id, lock=True)
    if purchase is None:
        return Outcome("not_ours") if intent is None or intent.purchase_id is None else Outcome("unknown_purchase")
    if purchase.kind == PurchaseKind.CHECKOUT:
        # A failed attempt inside Checkout: the customer can try another card there.
        return Outcome("checkout_attempt_failed", purchase.id)
    if purchase.status not in UNFINISHED_STATUSES:
        return Outcome(f"already_{purchase.status}", purchase.id, purchase.lot_id)
    code = code or (intent.error_code if intent else None) or "card_declined"
    text = failure_message(code, message or (intent.error_message if intent else None))
    repo.update_purchase(
        session,
        purchase.id,
        status=PurchaseStatus.FAILED,
        failure_code=code[:64],
        failure_message=text[:500],
        updated_at=now,
        **(_intent_fields(session, purchase, intent.id) if intent is not None else {}),
    )
    settings = repo.get_auto_recharge(session, purchase.account_id, lock=True)
    if settings is not None and count_failure:
        failures = settings.consecutive_failures + 1
        values: dict[str, Any] = {
            "consecutive_failures": failures,
            "last_failure_code": code[:64],
            "last_failure_message": text[:500],
            "last_failure_at": now,
            "updated_at": now,
        }
        if failures >= get_settings().card_auto_recharge_max_failures:
            values |= {"enabled": False, "disabled_reason": "too_many_failures"}
        repo.update_auto_recharge(session, purchase.account_id, **values)
    record_auto_recharge_failed(
        session,
        account_id=purchase.account_id,
        purchase_id=purchase.id,
        amount_credits=purchase.amount_credits,
        amount_cents=purchase.amount_cents,
        failure_code=code[:64],
        failure_message=text[:500],
        now=now,
    )
    return Outcome("failed", purchase.id)
