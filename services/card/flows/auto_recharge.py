"""Auto-recharge's pass over the network: find new crossings, then charge each due purchase off-session through
Stripe, opening a short unit of work before and after each call (none is open while Stripe answers). What is due,
and what a crossing records, is decided in services.card.auto_recharge, inside the caller's session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from services.card.auto_recharge import MAX_STRIPE_ATTEMPTS, DueCharge, detect_crossings, due_charges
from services.card.fulfilment import fail_payment_intent, fulfil_payment_intent
from services.card.purchases import record_start_failure
from services.card.stripe_client import StripeGateway
from services.core.db import unit_of_work
from services.core.errors import CreditrailError


def charge(engine: Engine, gateway: StripeGateway, item: DueCharge, now: datetime) -> str:
    """Charge one crossing's purchase off-session (no transaction open during the call) and record the result."""
    if item.customer_id is None or item.payment_method_id is None:
        with unit_of_work(engine) as session:
            return fail_payment_intent(session, None, now=now, purchase_id=item.purchase_id, code="no_saved_card").code
    try:
        result = gateway.charge_off_session(
            item.params, idempotency_key=f"auto-recharge:{item.account_id}:{item.crossing}"
        )
    except CreditrailError as exc:
        with unit_of_work(engine) as session:
            record_start_failure(session, item.purchase_id, exc, now)
            if item.stripe_attempts + 1 >= MAX_STRIPE_ATTEMPTS:
                fail_payment_intent(
                    session,
                    None,
                    now=now,
                    purchase_id=item.purchase_id,
                    code=exc.code,
                    message=exc.message,
                    count_failure=False,
                )
        return f"error:{exc.code}"
    with unit_of_work(engine) as session:
        intent = result.intent
        if result.declined or intent is None:
            outcome = fail_payment_intent(
                session,
                intent,
                now=now,
                purchase_id=item.purchase_id,
                code=result.error_code,
                message=result.error_message,
            )
        elif intent.status in ("requires_action", "requires_payment_method", "canceled"):
            code = "authentication_required" if intent.status == "requires_action" else "card_declined"
            outcome = fail_payment_intent(session, intent, now=now, purchase_id=item.purchase_id, code=code)
        else:
            outcome = fulfil_payment_intent(session, intent, now=now)
        return outcome.code


def run(engine: Engine, gateway: StripeGateway, now: datetime, batch_size: int) -> int:
    """One pass: find new crossings (page by page, each page its own unit of work), then charge up to
    ``batch_size`` due purchases. Returns the charges attempted."""
    after = 0
    while True:
        with unit_of_work(engine) as session:
            seen, _recorded, after = detect_crossings(session, after_account_id=after, limit=batch_size, now=now)
        if seen < batch_size:
            break
    with unit_of_work(engine) as session:
        due = due_charges(session, batch_size)
    for item in due:
        charge(engine, gateway, item, now)
    return len(due)
