"""The sync job: read recent events and Checkout Sessions back from Stripe, so a lost webhook still mints.

Events: Stripe's event list (the types the rail acts on) since the cursor, less an overlap, is stored in the inbox
exactly as a webhook would be (unique by event id, so nothing is stored twice) and processed. The cursor moves
only when the list was read to its end. Stripe keeps events for 30 days; the lookback is bounded by settings.

Checkout Sessions: the sessions created within the lookback window that belong to a purchase of ours still
unfinished are fulfilled (or marked expired, or attached when we never heard back from the create call) from the
listed object, through the same fulfilment as the webhook.

Our own deadline: a purchase still waiting on its session once the session's ``expires_at`` and a grace
(``card_checkout_expiry_grace_seconds``) have passed, and that neither ``checkout.session.expired`` nor the list
settled, is looked up on Stripe and settled as its session is: paid, it mints; expired (or gone from Stripe), the
purchase expires and no longer shows as waiting in the customer's history. One Stripe still calls open is asked
about again on the next pass.

Every Stripe call is made with no transaction open; each write is its own short unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.card import repository as repo
from services.card import stripe_json
from services.card.errors import StripeRejected, StripeTimeout, StripeUnavailable
from services.card.flows.inbox import process_event
from services.card.fulfilment import expire_purchase, fulfil_checkout_session, mark_checkout_expired
from services.card.models import PurchaseStatus
from services.card.purchases import attach_checkout_session
from services.card.stripe_client import StripeGateway
from services.card.stripe_objects import CheckoutSessionData, EventData
from services.card.webhooks import HANDLED_EVENT_TYPES, store_event
from services.core.db import unit_of_work
from services.core.settings import Settings

EVENTS_CURSOR = "stripe_events"
# Events are listed from a little before the cursor: Stripe's "created" is in whole seconds.
OVERLAP_SECONDS = 300
# Stripe keeps an idempotency key 24 hours, and a Checkout Session lives at most 24 hours.
UNSTARTED_EXPIRY = timedelta(hours=25)
SESSION_LIFETIME = timedelta(hours=24)
# Overdue purchases looked up on Stripe per pass (a pass that changes many runs again).
OVERDUE_BATCH = 100


@dataclass(frozen=True, slots=True)
class SyncResult:
    events_listed: int
    events_stored: int
    sessions_listed: int
    purchases_updated: int

    @property
    def changed(self) -> int:
        return self.events_stored + self.purchases_updated


def sync_events(engine: Engine, gateway: StripeGateway, settings: Settings, now: datetime) -> tuple[int, int]:
    """Store (and process) the events a webhook may have missed. Returns (listed, newly stored)."""
    floor = int(now.timestamp()) - settings.card_sync_lookback_seconds
    with unit_of_work(engine) as session:
        cursor = repo.get_cursor(session, EVENTS_CURSOR)
    since = floor if cursor is None else max(floor, cursor - OVERLAP_SECONDS)
    listed, stored, newest, read_to_end = 0, [], 0, False
    starting_after: str | None = None
    for _page in range(settings.card_sync_max_pages):
        page = gateway.list_events(created_gte=since, types=list(HANDLED_EVENT_TYPES), starting_after=starting_after)
        listed += len(page.data)
        with unit_of_work(engine) as session:
            for raw in page.data:
                event = EventData.parse(raw)
                newest = max(newest, event.created)
                receipt = store_event(session, event, stripe_json.dumps(raw), source="sync", now=now, settings=settings)
                if not receipt.duplicate:
                    stored.append(receipt.inbox_id)
        if not page.has_more or not page.data:
            read_to_end = True
            break
        starting_after = str(page.data[-1]["id"])
    if read_to_end and newest:
        with unit_of_work(engine) as session:
            repo.set_cursor(session, EVENTS_CURSOR, newest, now)
    for inbox_id in stored:
        process_event(engine, inbox_id, gateway, settings, now=now)
    return listed, len(stored)


def sync_sessions(engine: Engine, gateway: StripeGateway, settings: Settings, now: datetime) -> tuple[int, int]:
    """Fulfil, expire or attach our unfinished purchases from Stripe's list of recent Checkout Sessions.
    Returns (listed, purchases updated)."""
    since = int(now.timestamp()) - settings.card_sync_lookback_seconds
    listed = updated = 0
    starting_after: str | None = None
    for _page in range(settings.card_sync_max_pages):
        page = gateway.list_checkout_sessions(created_gte=since, starting_after=starting_after, with_card=True)
        listed += len(page.data)
        sessions = [CheckoutSessionData.parse(raw) for raw in page.data]
        ours = {data.purchase_id: data for data in sessions if data.purchase_id is not None}
        with unit_of_work(engine) as session:
            unfinished = repo.unfinished_purchase_ids(session, [pid for pid in ours if pid is not None])
        for purchase_id in sorted(unfinished):
            data = ours[purchase_id]
            with unit_of_work(engine) as session:
                updated += _apply_session(session, purchase_id, data, now)
        if not page.has_more or not page.data:
            break
        starting_after = str(page.data[-1]["id"])
    # A purchase whose session was never made (Stripe failed, the customer never retried) can no longer be paid
    # once Stripe's idempotency window and a session's lifetime have passed.
    with unit_of_work(engine) as session:
        updated += repo.expire_unstarted(session, created_before=now - UNSTARTED_EXPIRY, now=now)
    updated += expire_overdue(engine, gateway, settings, now)
    return listed, updated


def expire_overdue(engine: Engine, gateway: StripeGateway, settings: Settings, now: datetime) -> int:
    """Settle purchases past their session's deadline (``expires_at``, or creation and a session's longest
    lifetime when unknown, plus the grace) from their session as Stripe has it now. Returns the purchases
    changed."""
    grace = timedelta(seconds=settings.card_checkout_expiry_grace_seconds)
    with unit_of_work(engine) as session:
        due = repo.overdue_checkouts(
            session, expired_before=now - grace, created_before=now - SESSION_LIFETIME - grace, limit=OVERDUE_BATCH
        )
    updated = 0
    for purchase_id, session_id in due:
        data: CheckoutSessionData | None
        try:
            data = gateway.retrieve_checkout_session(session_id)
        except StripeRejected as exc:
            if exc.details.get("stripe_status") != 404:
                continue
            data = None  # Stripe no longer has the session: nothing is left to pay.
        except (StripeUnavailable, StripeTimeout):
            break  # Stripe is having trouble: the next pass asks again.
        with unit_of_work(engine) as session:
            if data is None:
                updated += 1 if expire_purchase(session, purchase_id, now=now).code == "expired" else 0
            else:
                updated += _apply_session(session, purchase_id, data, now)
    return updated


def _apply_session(session: Session, purchase_id: int, data: CheckoutSessionData, now: datetime) -> int:
    if data.status == "complete":
        fulfil_checkout_session(session, data, now=now)
        return 1
    if data.status == "expired":
        mark_checkout_expired(session, data, now=now)
        return 1
    row = repo.get_purchase(session, purchase_id)
    if row is not None and row.status == PurchaseStatus.PENDING and row.checkout_session_id is None:
        attach_checkout_session(session, purchase_id, data, now)
        return 1
    return 0


def sync(engine: Engine, gateway: StripeGateway, settings: Settings, now: datetime) -> SyncResult:
    events_listed, events_stored = sync_events(engine, gateway, settings, now)
    sessions_listed, updated = sync_sessions(engine, gateway, settings, now)
    return SyncResult(events_listed, events_stored, sessions_listed, updated)
