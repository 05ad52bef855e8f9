"""Refunds and disputes: the credits a card payment bought are taken back, and a won dispute gives them back.

Everything here converges on state rather than reacting to single events, so events may come in any order and
any number of times:

- a purchase keeps the cumulative refunded amount Stripe reported (the largest seen); the credits clawed back for
  refunds are brought up to that amount's share of the lot, each step under a ledger idempotency key naming the
  refunded amount and what was clawed back before it;
- each dispute is kept with its latest status (a closed dispute never reopens because an older event arrives
  late); an open or lost dispute has its amount's share clawed back once (key: the dispute id), a won one has what
  was clawed back for it reinstated once;
- a refund or dispute seen before the purchase minted is only recorded; :func:`settle` runs again right after the
  mint, in the same transaction.

A refund or dispute for a charge that belongs to no purchase of ours is a finance exception.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.card import repository as repo
from services.card.models import ClawbackKind
from services.card.outcome import Outcome, exception_outcome
from services.card.rows import DisputeRow, PurchaseRow
from services.card.stripe_objects import ChargeData, DisputeData
from services.core.money import share_of_credits
from services.events.emit import record_dispute_reinstated, record_refund_clawed_back
from services.ledger import repository as ledger_repo
from services.ledger.clawback import clawback, reinstate
from services.outbox.service import record_clawback_notice, record_reinstatement_notice
from services.review.service import card_reference, raise_exception

RAIL = "card"
# Dispute statuses after which the funds are back with us: what was clawed back is reinstated.
RETURNED_STATUSES = frozenset({"won", "warning_closed", "prevented"})
FINAL_STATUSES = RETURNED_STATUSES | {"lost"}


def _available_to_claw(session: Session, lot_id: int) -> int:
    lot = ledger_repo.get_lot(session, lot_id)
    assert lot is not None  # the purchase's lot (a foreign key)
    return int(lot.credits - lot.clawed_back_credits)


def _stripe_object_of(purchase: PurchaseRow) -> str:
    """The Stripe object a purchase's exceptions are about: its charge, else its Checkout Session or PaymentIntent."""
    return str(
        purchase.charge_id or purchase.checkout_session_id or purchase.payment_intent_id or f"purchase:{purchase.id}"
    )


def _claw(
    session: Session,
    purchase: PurchaseRow,
    lot_id: int,
    *,
    kind: str,
    reference: str,
    amount_credits: int,
    amount_cents: int,
    reason: str,
    now: datetime,
) -> int:
    """Claw back up to ``amount_credits`` (never more than the lot has left to give); returns what was taken."""
    available = _available_to_claw(session, lot_id)
    taken = min(amount_credits, available)
    if taken < amount_credits:
        raise_exception(
            session,
            rail=RAIL,
            kind="clawback_exceeds_lot",
            reference=card_reference(_stripe_object_of(purchase), occurrence=f"{kind}:{reference}"),
            account_id=purchase.account_id,
            amount_credits=amount_credits - taken,
            details={"purchase_id": purchase.id, "lot_id": lot_id, "wanted_credits": amount_credits},
            now=now,
        )
    if taken <= 0:
        return 0
    result = clawback(
        session,
        lot_id=lot_id,
        amount_credits=taken,
        idempotency_key=f"card:{kind}:{reference}",
        reason=reason,
        now=now,
    )
    repo.insert_clawback(
        session,
        {
            "purchase_id": purchase.id,
            "lot_id": lot_id,
            "kind": kind,
            "reference": reference,
            "amount_cents": amount_cents,
            "amount_credits": taken,
            "transaction_id": result.transaction_id,
            "created_at": now,
        },
    )
    record_clawback_notice(
        session,
        lot_id=lot_id,
        transaction_id=result.transaction_id,
        amount_credits=taken,
        reason=reason,
        now=now,
    )
    record_refund_clawed_back(
        session,
        account_id=purchase.account_id,
        purchase_id=purchase.id,
        lot_id=lot_id,
        kind=kind,
        transaction_id=result.transaction_id,
        amount_credits=taken,
        amount_usd_cents=amount_cents,
        reason=reason,
        now=now,
    )
    return taken


def settle(session: Session, purchase_id: int, now: datetime) -> None:
    """Bring the ledger in line with the purchase's refunds and disputes. The caller holds the purchase's lock."""
    purchase = repo.get_purchase(session, purchase_id)
    lot_id = purchase.lot_id if purchase is not None else None
    if purchase is None or lot_id is None:
        return
    paid_cents = purchase.amount_paid_cents or purchase.amount_cents
    refunded_cents = min(purchase.refunded_cents, paid_cents)
    clawed_credits, answered_cents = repo.refund_clawbacks(session, purchase_id) if refunded_cents else (0, 0)
    wanted = share_of_credits(purchase.amount_credits, refunded_cents, paid_cents) - clawed_credits
    if wanted > 0:
        _claw(
            session,
            purchase,
            lot_id,
            kind=ClawbackKind.REFUND,
            reference=f"{purchase_id}:{refunded_cents}:{clawed_credits}",
            amount_credits=wanted,
            amount_cents=max(refunded_cents - answered_cents, 0),
            reason=f"card refund on purchase {purchase_id}",
            now=now,
        )
    # A dispute always names its charge, which it records on the purchase: no charge, no dispute to look for.
    disputes = repo.disputes_of(session, purchase_id) if purchase.charge_id is not None else []
    for dispute in disputes:
        _settle_dispute(session, purchase, lot_id, dispute, paid_cents, now)


def _settle_dispute(
    session: Session, purchase: PurchaseRow, lot_id: int, dispute: DisputeRow, paid_cents: int, now: datetime
) -> None:
    if dispute.status in RETURNED_STATUSES:
        owed = dispute.clawed_back_credits - dispute.reinstated_credits
        if owed > 0:
            result = reinstate(
                session,
                lot_id=lot_id,
                amount_credits=owed,
                idempotency_key=f"card:dispute:{dispute.dispute_id}",
                reason=f"dispute {dispute.dispute_id} {dispute.status}",
                now=now,
            )
            repo.insert_clawback(
                session,
                {
                    "purchase_id": purchase.id,
                    "lot_id": lot_id,
                    "kind": ClawbackKind.DISPUTE_REINSTATEMENT,
                    "reference": dispute.dispute_id,
                    "amount_cents": min(dispute.amount_cents, paid_cents),
                    "amount_credits": owed,
                    "transaction_id": result.transaction_id,
                    "created_at": now,
                },
            )
            repo.update_dispute(
                session, dispute.dispute_id, reinstated_credits=dispute.clawed_back_credits, updated_at=now
            )
            # The customer and the platform hear of it, as they heard of the clawback.
            record_reinstatement_notice(
                session,
                lot_id=lot_id,
                transaction_id=result.transaction_id,
                amount_credits=owed,
                reason=f"dispute {dispute.dispute_id} {dispute.status}",
                now=now,
            )
            record_dispute_reinstated(
                session,
                account_id=purchase.account_id,
                purchase_id=purchase.id,
                lot_id=lot_id,
                dispute_id=dispute.dispute_id,
                status=dispute.status,
                transaction_id=result.transaction_id,
                amount_credits=owed,
                now=now,
            )
        return
    if dispute.clawed_back_credits > 0:
        return
    disputed_cents = min(dispute.amount_cents, paid_cents)
    taken = _claw(
        session,
        purchase,
        lot_id,
        kind=ClawbackKind.DISPUTE,
        reference=dispute.dispute_id,
        amount_credits=share_of_credits(purchase.amount_credits, disputed_cents, paid_cents),
        amount_cents=disputed_cents,
        reason=f"dispute {dispute.dispute_id} on purchase {purchase.id}",
        now=now,
    )
    if taken:
        repo.update_dispute(session, dispute.dispute_id, clawed_back_credits=taken, updated_at=now)


def _find_purchase(
    session: Session, charge_id: str | None, intent_id: str | None, hint: int | None
) -> PurchaseRow | None:
    purchase_id = repo.purchase_id_by_payment(session, charge_id=charge_id, payment_intent_id=intent_id) or hint
    return repo.get_purchase(session, purchase_id, lock=True) if purchase_id is not None else None


def _link_payment(
    session: Session, purchase: PurchaseRow, charge_id: str | None, intent_id: str | None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if charge_id and purchase.charge_id is None:
        values["charge_id"] = charge_id
    if intent_id and purchase.payment_intent_id is None and repo.purchase_by_intent(session, intent_id) is None:
        values["payment_intent_id"] = intent_id
    return values


def record_refund(session: Session, charge: ChargeData, *, purchase_hint: int | None, now: datetime) -> Outcome:
    """A ``charge.refunded``: record the cumulative refunded amount and claw back its share."""
    purchase = _find_purchase(session, charge.id, charge.payment_intent, charge.purchase_id or purchase_hint)
    refunded_cents = charge.amount_refunded or 0
    if purchase is None:
        raise_exception(
            session,
            rail=RAIL,
            kind="unknown_charge",
            reference=card_reference(charge.id),
            amount_cents=refunded_cents,
            details={"event": "charge.refunded", "payment_intent": charge.payment_intent},
            now=now,
        )
        return exception_outcome("unknown_charge")
    paid_cents = purchase.amount_paid_cents or purchase.amount_cents
    if refunded_cents > paid_cents or (charge.currency not in (None, "usd")):
        raise_exception(
            session,
            rail=RAIL,
            kind="refund_exceeds_purchase",
            reference=card_reference(charge.id, occurrence=refunded_cents),
            account_id=purchase.account_id,
            amount_cents=refunded_cents,
            details={"purchase_id": purchase.id, "paid_cents": paid_cents, "currency": charge.currency},
            now=now,
        )
    values = _link_payment(session, purchase, charge.id, charge.payment_intent)
    if refunded_cents > purchase.refunded_cents:
        values["refunded_cents"] = min(refunded_cents, paid_cents)
    if values:
        repo.update_purchase(session, purchase.id, updated_at=now, **values)
    settle(session, purchase.id, now)
    return Outcome("refund_recorded" if purchase.lot_id is None else "refund_settled", purchase.id, purchase.lot_id)


def record_dispute(session: Session, dispute: DisputeData, *, purchase_hint: int | None, now: datetime) -> Outcome:
    """A ``charge.dispute.*``: keep the dispute's latest status, then claw back or reinstate."""
    purchase = _find_purchase(session, dispute.charge, dispute.payment_intent, purchase_hint)
    if purchase is None:
        raise_exception(
            session,
            rail=RAIL,
            kind="unknown_dispute",
            reference=card_reference(dispute.id),
            amount_cents=dispute.amount,
            details={"charge": dispute.charge, "status": dispute.status},
            now=now,
        )
        return exception_outcome("unknown_dispute")
    status = dispute.status or "needs_response"
    closed_at = now if status in FINAL_STATUSES else None
    existing = repo.get_dispute(session, dispute.id)
    if existing is None:
        repo.insert_dispute(
            session,
            {
                "dispute_id": dispute.id,
                "purchase_id": purchase.id,
                "charge_id": dispute.charge,
                "amount_cents": dispute.amount or 0,
                "status": status,
                "clawed_back_credits": 0,
                "reinstated_credits": 0,
                "created_at": now,
                "updated_at": now,
                "closed_at": closed_at,
            },
        )
    elif existing.status not in FINAL_STATUSES and existing.status != status:
        repo.update_dispute(session, dispute.id, status=status, updated_at=now, closed_at=closed_at)
    values = _link_payment(session, purchase, dispute.charge, dispute.payment_intent)
    if values:
        repo.update_purchase(session, purchase.id, updated_at=now, **values)
    settle(session, purchase.id, now)
    return Outcome(f"dispute_{status}", purchase.id, purchase.lot_id)
