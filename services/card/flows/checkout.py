"""Starting a card checkout: record the purchase, make the Stripe Customer and Checkout Session, attach it. Each
step is its own unit of work and no transaction is open while Stripe answers; the steps' rules and records are in
services.card.purchases, inside the caller's session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from services.card import repository as repo
from services.card.errors import StripeInvalidResponse
from services.card.models import PurchaseStatus
from services.card.packs import Pack
from services.card.purchases import (
    PurchaseView,
    attach_checkout_session,
    checkout_session_params,
    ensure_customer,
    record_checkout_purchase,
    record_start_failure,
    record_unusable_session,
    view,
)
from services.card.stripe_client import StripeGateway
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.errors import CreditrailError
from services.core.settings import Settings


def start_checkout(
    engine: Engine,
    gateway: StripeGateway,
    settings: Settings,
    *,
    account_id: int,
    pack: Pack,
    save_card: bool,
    idempotency_key: str,
    now: datetime | None = None,
) -> tuple[PurchaseView, bool]:
    """Steps 1 to 3 (each its own unit of work; this is a boundary, like an endpoint). Returns the purchase and
    whether it was there before (a replay). Raises a 502/504-class error, leaving the purchase retryable, when
    Stripe fails; a session made without a URL fails the purchase (502 ``stripe_invalid_response``)."""
    now = now or utcnow()
    with unit_of_work(engine) as session:
        row, created = record_checkout_purchase(
            session, account_id=account_id, pack=pack, save_card=save_card, idempotency_key=idempotency_key, now=now
        )
        customer = repo.get_customer(session, account_id)
    if row.status != PurchaseStatus.PENDING:
        return view(row), not created
    try:
        customer_id = customer.stripe_customer_id if customer is not None else None
        if customer_id is None:
            made = gateway.create_customer(account_id=account_id, idempotency_key=f"customer:{account_id}")
            with unit_of_work(engine) as session:
                customer_id = ensure_customer(session, account_id, made, utcnow())
        params = checkout_session_params(row, customer_id, settings)
        data = gateway.create_checkout_session(params, idempotency_key=f"purchase:{row.id}")
    except CreditrailError as exc:
        with unit_of_work(engine) as session:
            record_start_failure(session, row.id, exc, utcnow())
        exc.details.setdefault("purchase_id", row.id)
        raise
    if not data.url:
        unusable = StripeInvalidResponse(
            "Stripe made the Checkout Session without a URL to pay at",
            purchase_id=row.id,
            checkout_session_id=data.id,
        )
        with unit_of_work(engine) as session:
            record_unusable_session(session, row.id, data, unusable, utcnow())
        raise unusable
    with unit_of_work(engine) as session:
        attached = attach_checkout_session(session, row.id, data, utcnow())
    return view(attached), not created
