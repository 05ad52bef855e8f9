"""The card rail's queries. SQLAlchemy Core on the caller's session: nothing here commits. Reads return rows typed
by their shapes in ``services.card.rows``.

``lock=True`` reads take the row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's IMMEDIATE transaction
already excludes other writers). Lock order, everywhere: the inbox event, then the purchase, then (inside the
ledger) the customer's account.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from services.card.errors import PurchaseNotFound
from services.card.models import (
    UNFINISHED_STATUSES,
    CardAutoRecharge,
    CardClawback,
    CardCustomer,
    CardDispute,
    CardPurchase,
    CardSyncCursor,
    ClawbackKind,
    InboxStatus,
    PurchaseKind,
    PurchaseStatus,
    StripeWebhookEvent,
)
from services.card.outcome import Outcome
from services.card.rows import (
    AutoRechargeRow,
    ClaimedEvent,
    ClawbackRow,
    CustomerRow,
    DisputeRow,
    InboxEventRef,
    InboxEventRow,
    PurchaseRow,
)
from services.card.stripe_objects import card_label
from services.core.db import insert_for, table_of

customers = table_of(CardCustomer)
purchases = table_of(CardPurchase)
disputes = table_of(CardDispute)
clawbacks = table_of(CardClawback)
inbox = table_of(StripeWebhookEvent)
auto_recharge = table_of(CardAutoRecharge)
cursors = table_of(CardSyncCursor)


def _locked(stmt: Select[Any], lock: bool, *, skip_locked: bool = False) -> Select[Any]:
    return stmt.with_for_update(skip_locked=skip_locked) if lock else stmt


# The hot path (a webhook stored, then fulfilled) runs these prebuilt statements with bound parameters, so each
# execution reuses the compiled form instead of building and keying a new statement.
_purchase_by_id = select(purchases).where(purchases.c.id == bindparam("purchase_id"))
_purchase_by_id_locked = _purchase_by_id.with_for_update()
_purchase_by_session = select(purchases).where(purchases.c.checkout_session_id == bindparam("session_id"))
_purchase_by_session_locked = _purchase_by_session.with_for_update()
_update_purchase = update(purchases).where(purchases.c.id == bindparam("purchase_id_"))
_insert_event = {
    name: dialect.insert(inbox).on_conflict_do_nothing(index_elements=["event_id"]).returning(inbox.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
# Several events in one statement (SQLAlchemy sends the parameter sets as one multi-row INSERT); the event id comes
# back with each inserted row's id, since a row already stored returns nothing.
_insert_events = {
    name: dialect.insert(inbox)
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(inbox.c.id, inbox.c.event_id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_events_by_stripe_ids = select(inbox.c.id, inbox.c.event_id, inbox.c.event_type, inbox.c.status).where(
    inbox.c.event_id.in_(bindparam("event_ids", expanding=True))
)
_claim_event = (
    select(inbox.c.id, inbox.c.attempts)
    .where(inbox.c.id == bindparam("inbox_id"), inbox.c.status.in_([InboxStatus.PENDING, InboxStatus.FAILED]))
    .with_for_update(skip_locked=True)
)
_update_event = update(inbox).where(inbox.c.id == bindparam("inbox_id_"))


# --- Stripe customers --------------------------------------------------------------------------------------


def get_customer(session: Session, account_id: int) -> CustomerRow | None:
    return session.execute(select(customers).where(customers.c.account_id == account_id)).first()


def insert_customer(session: Session, account_id: int, stripe_customer_id: str, now: datetime) -> None:
    """Record the account's Stripe customer; the first one recorded stays."""
    stmt = (
        insert_for(session, customers)
        .values(account_id=account_id, stripe_customer_id=stripe_customer_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["account_id"])
    )
    session.execute(stmt)


def save_payment_method(session: Session, account_id: int, payment_method_id: str, now: datetime) -> None:
    session.execute(
        update(customers)
        .where(customers.c.account_id == account_id)
        .values(payment_method_id=payment_method_id, payment_method_saved_at=now, updated_at=now)
    )


# --- purchases ---------------------------------------------------------------------------------------------


def insert_purchase(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a purchase; None when (account, idempotency key) is taken already."""
    stmt = (
        insert_for(session, purchases)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["account_id", "idempotency_key"])
        .returning(purchases.c.id)
    )
    inserted = session.execute(stmt).scalar()
    return int(inserted) if inserted is not None else None


def get_purchase(session: Session, purchase_id: int, *, lock: bool = False) -> PurchaseRow | None:
    stmt = _purchase_by_id_locked if lock else _purchase_by_id
    return session.execute(stmt, {"purchase_id": purchase_id}).first()


def require_purchase(session: Session, purchase_id: int, *, lock: bool = False) -> PurchaseRow:
    """The purchase, which the caller knows exists (``PurchaseNotFound`` should it not)."""
    row = get_purchase(session, purchase_id, lock=lock)
    if row is None:
        raise PurchaseNotFound(f"purchase {purchase_id} not found", purchase_id=purchase_id)
    return row


def card_of_purchase(session: Session, purchase_id: int) -> tuple[str | None, str | None]:
    """(brand, last4) of the card that paid a purchase, each None while unknown."""
    row = session.execute(
        select(purchases.c.card_brand, purchases.c.card_last4).where(purchases.c.id == purchase_id)
    ).first()
    return (row.card_brand, row.card_last4) if row is not None else (None, None)


def card_label_of_purchase(session: Session, purchase_id: int) -> str | None:
    """How a receipt names the card that paid a purchase ("Visa ending 4242"); None while it is not known."""
    return card_label(*card_of_purchase(session, purchase_id))


def references_with_card(session: Session, references: Sequence[str]) -> set[str]:
    """Those of ``references`` (Checkout Session and PaymentIntent ids) whose purchase knows the card that paid it."""
    if not references:
        return set()
    stmt = select(purchases.c.checkout_session_id, purchases.c.payment_intent_id).where(
        purchases.c.card_brand.is_not(None),
        or_(purchases.c.checkout_session_id.in_(references), purchases.c.payment_intent_id.in_(references)),
    )
    wanted = set(references)
    return {ref for row in session.execute(stmt) for ref in row if ref in wanted}


def cards_of_purchases(session: Session, purchase_ids: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
    """(brand, last4) of the card that paid each purchase, by id."""
    if not purchase_ids:
        return {}
    stmt = select(purchases.c.id, purchases.c.card_brand, purchases.c.card_last4).where(
        purchases.c.id.in_(purchase_ids)
    )
    return {int(row.id): (row.card_brand, row.card_last4) for row in session.execute(stmt)}


def card_labels_of_purchases(session: Session, purchase_ids: Sequence[int]) -> dict[int, str | None]:
    """How receipts name the card that paid each purchase, by id (None while it is not known): the outbox's
    ``CardsOfPurchases``."""
    return {purchase_id: card_label(*card) for purchase_id, card in cards_of_purchases(session, purchase_ids).items()}


def purchase_by_key(session: Session, account_id: int, idempotency_key: str) -> PurchaseRow | None:
    return session.execute(
        select(purchases).where(purchases.c.account_id == account_id, purchases.c.idempotency_key == idempotency_key)
    ).first()


def require_purchase_by_key(session: Session, account_id: int, idempotency_key: str) -> PurchaseRow:
    """The purchase an idempotency key made, which the caller knows exists (``PurchaseNotFound`` should it not)."""
    row = purchase_by_key(session, account_id, idempotency_key)
    if row is None:
        raise PurchaseNotFound("no purchase was made with this idempotency key", idempotency_key=idempotency_key)
    return row


def purchase_by_session(session: Session, checkout_session_id: str, *, lock: bool = False) -> PurchaseRow | None:
    stmt = _purchase_by_session_locked if lock else _purchase_by_session
    return session.execute(stmt, {"session_id": checkout_session_id}).first()


def purchase_by_intent(session: Session, payment_intent_id: str, *, lock: bool = False) -> PurchaseRow | None:
    stmt = select(purchases).where(purchases.c.payment_intent_id == payment_intent_id)
    return session.execute(_locked(stmt, lock)).first()


def purchase_id_by_payment(session: Session, *, charge_id: str | None, payment_intent_id: str | None) -> int | None:
    conditions = []
    if payment_intent_id:
        conditions.append(purchases.c.payment_intent_id == payment_intent_id)
    if charge_id:
        conditions.append(purchases.c.charge_id == charge_id)
    if not conditions:
        return None
    found = session.execute(select(purchases.c.id).where(or_(*conditions)).limit(1)).scalar()
    return int(found) if found is not None else None


def update_purchase(session: Session, purchase_id: int, **values: Any) -> None:
    session.execute(_update_purchase, {"purchase_id_": purchase_id, **values})


def list_purchases(
    session: Session, account_id: int, *, limit: int, before: datetime | None = None, before_id: int | None = None
) -> list[PurchaseRow]:
    """An account's purchases, newest first; ``before`` (and ``before_id`` for ties) pages back."""
    stmt = select(purchases).where(purchases.c.account_id == account_id)
    if before is not None:
        if before_id is not None:
            stmt = stmt.where(
                or_(
                    purchases.c.created_at < before,
                    (purchases.c.created_at == before) & (purchases.c.id < before_id),
                )
            )
        else:
            stmt = stmt.where(purchases.c.created_at < before)
    stmt = stmt.order_by(purchases.c.created_at.desc(), purchases.c.id.desc()).limit(limit)
    return list(session.execute(stmt).all())


def unfinished_purchase_ids(session: Session, ids: Sequence[int]) -> set[int]:
    if not ids:
        return set()
    stmt = select(purchases.c.id).where(
        purchases.c.id.in_(list(ids)),
        purchases.c.status.in_(UNFINISHED_STATUSES),
    )
    return {int(value) for value in session.execute(stmt).scalars()}


def expire_unstarted(session: Session, *, created_before: datetime, now: datetime) -> int:
    """Checkout purchases still pending (no session ever attached) since before ``created_before``: expired."""
    result = session.execute(
        update(purchases)
        .where(
            purchases.c.kind == PurchaseKind.CHECKOUT,
            purchases.c.status == PurchaseStatus.PENDING,
            purchases.c.checkout_session_id.is_(None),
            purchases.c.created_at < created_before,
        )
        .values(
            status=PurchaseStatus.EXPIRED,
            failure_code="not_started",
            failure_message="The checkout could not be started, and was not retried.",
            updated_at=now,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def overdue_checkouts(
    session: Session, *, expired_before: datetime, created_before: datetime, limit: int
) -> list[tuple[int, str]]:
    """(purchase id, Checkout Session id) of checkout purchases still waiting on their session (pending or open)
    whose session stopped being payable before ``expired_before``; one with no expiry on record counts from its
    creation (``created_before``). Oldest first."""
    stmt = (
        select(purchases.c.id, purchases.c.checkout_session_id)
        .where(
            purchases.c.status.in_([PurchaseStatus.PENDING, PurchaseStatus.OPEN]),
            purchases.c.kind == PurchaseKind.CHECKOUT,
            purchases.c.checkout_session_id.is_not(None),
            or_(
                purchases.c.checkout_expires_at < expired_before,
                purchases.c.checkout_expires_at.is_(None) & (purchases.c.created_at < created_before),
            ),
        )
        .order_by(purchases.c.id)
        .limit(limit)
    )
    return [(int(purchase_id), str(session_id)) for purchase_id, session_id in session.execute(stmt)]


def pending_auto_recharge_purchases(session: Session, limit: int) -> list[PurchaseRow]:
    stmt = (
        select(purchases)
        .where(purchases.c.kind == PurchaseKind.AUTO_RECHARGE, purchases.c.status == PurchaseStatus.PENDING)
        .order_by(purchases.c.id)
        .limit(limit)
    )
    return list(session.execute(stmt).all())


# --- disputes and clawbacks --------------------------------------------------------------------------------


def get_dispute(session: Session, dispute_id: str) -> DisputeRow | None:
    return session.execute(select(disputes).where(disputes.c.dispute_id == dispute_id)).first()


def insert_dispute(session: Session, values: dict[str, Any]) -> None:
    session.execute(
        insert_for(session, disputes).values(**values).on_conflict_do_nothing(index_elements=["dispute_id"])
    )


def update_dispute(session: Session, dispute_id: str, **values: Any) -> None:
    session.execute(update(disputes).where(disputes.c.dispute_id == dispute_id).values(**values))


def disputes_of(session: Session, purchase_id: int) -> list[DisputeRow]:
    stmt = select(disputes).where(disputes.c.purchase_id == purchase_id).order_by(disputes.c.id)
    return list(session.execute(stmt).all())


def refund_clawbacks(session: Session, purchase_id: int) -> tuple[int, int]:
    """(credits clawed back for refunds so far, refunded cents they answered)."""
    row = session.execute(
        select(
            func.coalesce(func.sum(clawbacks.c.amount_credits), 0),
            func.coalesce(func.sum(clawbacks.c.amount_cents), 0),
        ).where(clawbacks.c.purchase_id == purchase_id, clawbacks.c.kind == ClawbackKind.REFUND)
    ).one()
    return int(row[0]), int(row[1])


def insert_clawback(session: Session, values: dict[str, Any]) -> None:
    session.execute(
        insert_for(session, clawbacks).values(**values).on_conflict_do_nothing(index_elements=["kind", "reference"])
    )


def clawbacks_of(session: Session, purchase_id: int) -> list[ClawbackRow]:
    stmt = select(clawbacks).where(clawbacks.c.purchase_id == purchase_id).order_by(clawbacks.c.id)
    return list(session.execute(stmt).all())


# --- the webhook inbox -------------------------------------------------------------------------------------


def insert_event(session: Session, values: dict[str, Any]) -> int | None:
    """Store an event once; None when its Stripe id is stored already."""
    stmt = _insert_event[session.get_bind().dialect.name]
    inserted = session.execute(stmt, values).scalar()
    return int(inserted) if inserted is not None else None


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Store several events (distinct event ids) at once; returns the inbox id of each one newly stored, by event id
    (those stored already are left out)."""
    if not rows:
        return {}
    result = session.execute(_insert_events[session.get_bind().dialect.name], list(rows))
    return {str(event_id): int(inbox_id) for inbox_id, event_id in result}


def events_by_stripe_ids(session: Session, event_ids: Sequence[str]) -> list[InboxEventRef]:
    """(id, event_id, event_type, status) of the stored events among ``event_ids``."""
    if not event_ids:
        return []
    return list(session.execute(_events_by_stripe_ids, {"event_ids": list(event_ids)}).all())


def get_event(session: Session, inbox_id: int) -> InboxEventRow | None:
    return session.execute(select(inbox).where(inbox.c.id == inbox_id)).first()


def event_by_stripe_id(session: Session, event_id: str) -> InboxEventRow | None:
    return session.execute(select(inbox).where(inbox.c.event_id == event_id)).first()


def claim_event(session: Session, inbox_id: int) -> ClaimedEvent | None:
    """Lock the event for processing when it is still due; None when it is done or another worker has it."""
    return session.execute(_claim_event, {"inbox_id": inbox_id}).first()


def claim_events(session: Session, inbox_ids: Sequence[int]) -> set[int]:
    """Lock, of these events, those still due that no other processor holds; returns their ids."""
    stmt = (
        select(inbox.c.id)
        .where(inbox.c.id.in_(list(inbox_ids)), inbox.c.status.in_([InboxStatus.PENDING, InboxStatus.FAILED]))
        .order_by(inbox.c.id)
        .with_for_update(skip_locked=True)
    )
    return {int(value) for value in session.execute(stmt).scalars()}


def mark_processed(session: Session, outcomes: Sequence[tuple[int, Outcome]], now: datetime) -> None:
    """Mark each (event id, outcome) processed, with the purchase it touched (one statement for all)."""
    if outcomes:
        session.execute(
            _update_event,
            [
                {
                    "inbox_id_": inbox_id,
                    "status": InboxStatus.PROCESSED,
                    "outcome": outcome.code[:200],
                    "purchase_id": outcome.purchase_id,
                    "processed_at": now,
                    "next_attempt_at": None,
                    "last_error": None,
                }
                for inbox_id, outcome in outcomes
            ],
        )


def update_event(session: Session, inbox_id: int, **values: Any) -> None:
    session.execute(_update_event, {"inbox_id_": inbox_id, **values})


def due_event_ids(session: Session, now: datetime, limit: int) -> list[int]:
    stmt = (
        select(inbox.c.id)
        .where(inbox.c.status.in_([InboxStatus.PENDING, InboxStatus.FAILED]), inbox.c.next_attempt_at <= now)
        .order_by(inbox.c.next_attempt_at, inbox.c.id)
        .limit(limit)
    )
    return [int(value) for value in session.execute(stmt).scalars()]


def payloads_of(session: Session, inbox_ids: Sequence[int]) -> list[tuple[int, str]]:
    """(id, payload) of stored events, in the order of ``inbox_ids``."""
    if not inbox_ids:
        return []
    found = session.execute(select(inbox.c.id, inbox.c.payload).where(inbox.c.id.in_(inbox_ids)))
    rows = {int(row.id): str(row.payload) for row in found}
    return [(inbox_id, rows[inbox_id]) for inbox_id in inbox_ids if inbox_id in rows]


def list_events(session: Session, *, status: str | None, limit: int, after_id: int = 0) -> list[InboxEventRow]:
    stmt = select(inbox).where(inbox.c.id > after_id)
    if status is not None:
        stmt = stmt.where(inbox.c.status == status)
    return list(session.execute(stmt.order_by(inbox.c.id).limit(limit)).all())


def count_events_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(inbox.c.status, func.count()).group_by(inbox.c.status)).all()
    return {str(status): int(count) for status, count in rows}


# --- auto-recharge -----------------------------------------------------------------------------------------


def get_auto_recharge(session: Session, account_id: int, *, lock: bool = False) -> AutoRechargeRow | None:
    stmt = select(auto_recharge).where(auto_recharge.c.account_id == account_id)
    return session.execute(_locked(stmt, lock)).first()


def insert_auto_recharge(session: Session, values: dict[str, Any]) -> None:
    session.execute(
        insert_for(session, auto_recharge).values(**values).on_conflict_do_nothing(index_elements=["account_id"])
    )


def update_auto_recharge(session: Session, account_id: int, **values: Any) -> None:
    session.execute(update(auto_recharge).where(auto_recharge.c.account_id == account_id).values(**values))


def enabled_auto_recharges(session: Session, *, after_account_id: int, limit: int) -> list[AutoRechargeRow]:
    """Enabled auto-recharges in account order, locked (skipping those another worker holds)."""
    stmt = (
        select(auto_recharge)
        .where(auto_recharge.c.enabled.is_(True), auto_recharge.c.account_id > after_account_id)
        .order_by(auto_recharge.c.account_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.execute(stmt).all())


# --- sync cursors ------------------------------------------------------------------------------------------


def get_cursor(session: Session, name: str) -> int | None:
    value = session.execute(select(cursors.c.created_unix).where(cursors.c.name == name)).scalar()
    return int(value) if value is not None else None


def set_cursor(session: Session, name: str, created_unix: int, now: datetime) -> None:
    """Move the cursor forward (never back). One sync job runs at a time (the worker's job lock)."""
    current = get_cursor(session, name)
    if current is None:
        session.execute(insert_for(session, cursors).values(name=name, created_unix=created_unix, updated_at=now))
    elif created_unix > current:
        session.execute(update(cursors).where(cursors.c.name == name).values(created_unix=created_unix, updated_at=now))
