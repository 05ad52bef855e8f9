"""Processing the webhook inbox, off the request path.

Each stored event is processed in three steps: read it (a short transaction), fetch from Stripe whatever the event
lacks (no transaction open: a Checkout Session without its amount, the PaymentIntent behind a charge we cannot
place, the card that paid a purchase about to mint, for its receipt), then one unit of work that claims the event
(``FOR UPDATE SKIP LOCKED``: a second processor of the same event skips it), applies it and marks it processed. A
failure rolls that unit back and is recorded in another: attempts, the error, and the next attempt after an
exponential backoff; after ``card_inbox_max_attempts`` the event is dead and a finance exception says so. An event
whose object cannot be read (no id, the wrong kind of object) would fail the same way every time: it is stored
failed for good (services.card.webhooks), and one stored before fails at once here, for good (no next attempt),
with the reason and a finance exception. An admin can send a dead or failed event round again.

The card that paid comes with the events Stripe sends beside a payment: ``charge.succeeded`` carries it
(:func:`~services.card.fulfilment.note_card` records it on the purchase, before or after the mint). Fulfilment asks
Stripe for it only when no event brought it: a charge's event in the same batch names it, or one read of the purchases'
cards per batch tells which still lack it; those reads are made concurrently (``pool``), not one after another.

The API process runs :func:`process_event` right after acknowledging a webhook (:class:`InlineProcessor`); the
worker's inbox job (:func:`drain`) takes everything due that this missed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.card import repository as repo
from services.card.errors import StripeRejected, WebhookEventNotFound
from services.card.fulfilment import (
    fail_payment_intent,
    fulfil_checkout_session,
    fulfil_payment_intent,
    mark_checkout_expired,
    mark_checkout_failed,
    note_card,
)
from services.card.models import RETRYABLE_INBOX_STATUSES, InboxStatus
from services.card.outcome import Outcome
from services.card.refunds import record_dispute, record_refund
from services.card.stripe_client import StripeGateway
from services.card.stripe_objects import (
    UNREADABLE,
    CardDetails,
    ChargeData,
    CheckoutSessionData,
    DisputeData,
    EventData,
    PaymentIntentData,
)
from services.card.webhooks import UNREADABLE_EXCEPTION, parse_event
from services.core import metrics
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.errors import CreditrailError
from services.core.settings import Settings
from services.review.service import card_reference, raise_exception

log = logging.getLogger("creditrail.card.inbox")

ERROR_MAX_CHARS = 2000


class UnreadableObject(ValueError):
    """An event's ``data.object`` that is not the object its type promises: retrying cannot change it."""


T = TypeVar("T")


def _read(parse: Callable[[Mapping[str, Any]], T], event: EventData) -> T:
    try:
        return parse(event.object)
    except ValueError as exc:
        raise UnreadableObject(f"{event.type}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Prepared:
    """An event with everything needed to apply it without calling Stripe."""

    apply: Callable[[Session, datetime], Outcome]


def _card(gateway: StripeGateway, intent_id: str) -> CardDetails | None:
    """The card that paid a PaymentIntent (its latest charge, expanded in one call), for the receipt. Best effort:
    Stripe failing here costs the receipt its card line, never the receipt or the mint."""
    try:
        return gateway.card_of_payment_intent(intent_id)
    except CreditrailError as exc:
        log.warning("the card of %s could not be read; the receipt goes without it: %s", intent_id, exc.code)
        return None


@dataclass(frozen=True, slots=True)
class KnownCards:
    """What a batch of events knows of the cards that paid, before asking Stripe: the Checkout Sessions and
    PaymentIntents whose purchase has its card recorded already, and the cards the batch's own
    ``charge.succeeded`` events name, by PaymentIntent."""

    recorded: frozenset[str] = frozenset()
    charged: Mapping[str, CardDetails] = field(default_factory=dict)


NO_CARDS = KnownCards()


def _checkout(gateway: StripeGateway, event: EventData, cards: KnownCards) -> CheckoutSessionData:
    data = _read(CheckoutSessionData.parse, event)
    if not data.complete_enough:
        # An event that lacks what fulfilment needs: read the session as Stripe has it now (its card with it).
        return gateway.retrieve_checkout_session(data.id)
    if _lacks_card(data) and data.payment_intent is not None and data.id not in cards.recorded:
        # The card from the charge's event in the same batch, or else from Stripe, before the unit of work opens.
        card = cards.charged.get(data.payment_intent) or _card(gateway, data.payment_intent)
        data = replace(data, card=card)
    return data


def _lacks_card(data: CheckoutSessionData) -> bool:
    return data.payment_status == "paid" and data.card is None


def _intent(gateway: StripeGateway, event: EventData, cards: KnownCards) -> PaymentIntentData:
    intent = _read(PaymentIntentData.parse, event)
    if _intent_lacks_card(intent) and intent.id not in cards.recorded:
        intent = replace(intent, card=cards.charged.get(intent.id) or _card(gateway, intent.id))
    return intent


def _intent_lacks_card(intent: PaymentIntentData) -> bool:
    return intent.status == "succeeded" and intent.card is None and intent.mints


def _charged_cards(events: Sequence[EventData]) -> dict[str, CardDetails]:
    """The cards the events' ``charge.succeeded`` name, by PaymentIntent."""
    cards: dict[str, CardDetails] = {}
    for event in events:
        if event.type == "charge.succeeded":
            try:
                charge = ChargeData.parse(event.object)
            except ValueError:
                continue  # unreadable: processing says so
            if charge.card is not None and charge.payment_intent is not None:
                cards[charge.payment_intent] = charge.card
    return cards


def _card_reference(event: EventData, charged: Mapping[str, CardDetails]) -> str | None:
    """The Checkout Session or PaymentIntent of an event that mints without saying which card paid (nor does a
    charge's event beside it): what to look up among the purchases' cards before asking Stripe."""
    try:
        if event.type in MINTING_CHECKOUT_EVENTS:
            data = CheckoutSessionData.parse(event.object)
            lacking = data.complete_enough and _lacks_card(data) and data.payment_intent not in charged
            return data.id if lacking else None
        if event.type == "payment_intent.succeeded":
            intent = PaymentIntentData.parse(event.object)
            return intent.id if _intent_lacks_card(intent) and intent.id not in charged else None
    except ValueError:
        return None  # unreadable: processing says so
    return None


def cards_known(engine: Engine, events: Sequence[EventData]) -> KnownCards:
    """What ``events`` and the purchases they mint know of the cards that paid: one read of the purchases' cards
    for all of them, none when no event needs it."""
    charged = _charged_cards(events)
    references = [ref for event in events if (ref := _card_reference(event, charged)) is not None]
    if not references:
        return KnownCards(charged=charged)
    with unit_of_work(engine) as session:
        return KnownCards(frozenset(repo.references_with_card(session, references)), charged)


def _purchase_hint(
    engine: Engine,
    gateway: StripeGateway,
    *,
    charge_id: str | None,
    intent_id: str | None,
    hint: int | None,
    read_charge: bool,
) -> int | None:
    """When no purchase of ours knows this charge or PaymentIntent yet (a refund or dispute that arrived before the
    checkout's completion), the PaymentIntent's metadata names the purchase. An object Stripe does not know (or will
    not show us) gives no hint, and the event becomes a finance exception; Stripe being down is retried."""
    if hint is not None:
        return hint
    with unit_of_work(engine) as session:
        known = repo.purchase_id_by_payment(session, charge_id=charge_id, payment_intent_id=intent_id)
    if known is not None:
        return known
    try:
        if intent_id is None and charge_id is not None and read_charge:
            intent_id = ChargeData.parse(gateway.retrieve_charge(charge_id)).payment_intent
        if intent_id is None:
            return None
        return gateway.retrieve_payment_intent(intent_id).purchase_id
    except StripeRejected:
        return None


MINTING_CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


def prepare(engine: Engine, gateway: StripeGateway, event: EventData, cards: KnownCards = NO_CARDS) -> Prepared:
    """What applying ``event`` takes, fetched from Stripe where the event lacks it. ``cards``: what the batch knows
    of the cards that paid (:func:`cards_known`); the card of any other paid purchase is asked for."""
    kind = event.type
    if kind in MINTING_CHECKOUT_EVENTS:
        data = _checkout(gateway, event, cards)
        return Prepared(lambda session, now: fulfil_checkout_session(session, data, now=now))
    if kind == "checkout.session.async_payment_failed":
        failed = _read(CheckoutSessionData.parse, event)
        return Prepared(lambda session, now: mark_checkout_failed(session, failed, now=now))
    if kind == "checkout.session.expired":
        expired = _read(CheckoutSessionData.parse, event)
        return Prepared(lambda session, now: mark_checkout_expired(session, expired, now=now))
    if kind == "payment_intent.succeeded":
        intent = _intent(gateway, event, cards)
        return Prepared(lambda session, now: fulfil_payment_intent(session, intent, now=now))
    if kind == "payment_intent.payment_failed":
        declined = _read(PaymentIntentData.parse, event)
        return Prepared(lambda session, now: fail_payment_intent(session, declined, now=now))
    if kind == "charge.succeeded":
        paid = _read(ChargeData.parse, event)
        return Prepared(lambda session, now: note_card(session, paid, now=now))
    if kind == "charge.refunded":
        charge = _read(ChargeData.parse, event)
        hint = _purchase_hint(
            engine,
            gateway,
            charge_id=charge.id,
            intent_id=charge.payment_intent,
            hint=charge.purchase_id,
            read_charge=False,
        )
        return Prepared(lambda session, now: record_refund(session, charge, purchase_hint=hint, now=now))
    if kind.startswith("charge.dispute."):
        dispute = _read(DisputeData.parse, event)
        found = _purchase_hint(
            engine, gateway, charge_id=dispute.charge, intent_id=dispute.payment_intent, hint=None, read_charge=True
        )
        return Prepared(lambda session, now: record_dispute(session, dispute, purchase_hint=found, now=now))
    return Prepared(lambda _session, _now: Outcome("unhandled_event_type"))


def backoff(attempts: int, settings: Settings) -> timedelta:
    seconds = settings.card_inbox_backoff_initial_seconds * 2 ** min(attempts - 1, 30)
    return timedelta(seconds=min(seconds, settings.card_inbox_backoff_max_seconds))


def process_event(
    engine: Engine,
    inbox_id: int,
    gateway: StripeGateway,
    settings: Settings,
    *,
    now: datetime | None = None,
    event: EventData | None = None,
) -> str | None:
    """Process one stored event; returns its outcome code, or None when there was nothing to do (done already,
    or another processor holds it). ``event``: the stored event, when the caller has it (the webhook just parsed
    it), which saves reading it back."""
    if event is None:
        with unit_of_work(engine) as session:
            row = repo.get_event(session, inbox_id)
        if row is None or row.status not in RETRYABLE_INBOX_STATUSES:
            return None
        payload = row.payload
    try:
        event = event or parse_event(payload)
        prepared = prepare(engine, gateway, event, cards_known(engine, [event]))
        with unit_of_work(engine) as session:
            if repo.claim_event(session, inbox_id) is None:
                return None
            moment = now or utcnow()
            outcome = prepared.apply(session, moment)
            repo.update_event(
                session,
                inbox_id,
                status=InboxStatus.PROCESSED,
                outcome=outcome.code[:200],
                purchase_id=outcome.purchase_id,
                processed_at=moment,
                next_attempt_at=None,
                last_error=None,
            )
        metrics.card_webhooks_processed()
        return outcome.code
    except UnreadableObject as exc:
        metrics.card_webhook_failed()
        _record_unreadable(engine, inbox_id, exc, now or utcnow())
        return UNREADABLE
    except Exception as exc:
        metrics.card_webhook_failed()
        _record_failure(engine, inbox_id, exc, settings, now or utcnow())
        return "failed"


def process_batch(
    engine: Engine,
    items: list[tuple[int, EventData]],
    gateway: StripeGateway,
    settings: Settings,
    pool: Executor | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Process several freshly stored events in one unit of work (one commit for all, two statements fewer per
    event). What they need from Stripe is fetched first, on ``pool``'s threads when given (concurrently: each is a
    network round trip). Should any of them fail, or the batch meet another processor's locks the wrong way round,
    it is rolled back whole and each event is processed on its own instead, where a failure is recorded against it
    alone."""
    unique: dict[int, EventData] = {}
    for inbox_id, event in items:  # an event delivered twice while pending may be queued twice
        unique.setdefault(inbox_id, event)
    items = list(unique.items())
    if len(items) == 1:
        process_event(engine, items[0][0], gateway, settings, now=now, event=items[0][1])
        return
    try:
        known = cards_known(engine, [event for _inbox_id, event in items])

        def prepared_one(item: tuple[int, EventData]) -> tuple[int, Prepared]:
            return item[0], prepare(engine, gateway, item[1], known)

        prepared = list(pool.map(prepared_one, items)) if pool is not None else [prepared_one(i) for i in items]
        with unit_of_work(engine) as session:
            claimed = repo.claim_events(session, [inbox_id for inbox_id, _ in prepared])
            moment = now or utcnow()
            outcomes = [(inbox_id, ready.apply(session, moment)) for inbox_id, ready in prepared if inbox_id in claimed]
            repo.mark_processed(session, outcomes, moment)
        metrics.card_webhooks_processed(len(outcomes))
    except Exception:
        for inbox_id, event in items:
            process_event(engine, inbox_id, gateway, settings, now=now, event=event)


def _record_unreadable(engine: Engine, inbox_id: int, exc: UnreadableObject, now: datetime) -> None:
    """Fail the event for good (no next attempt: only an admin's retry sends it round again), and tell finance."""
    error = f"{UNREADABLE}: {exc}"[:ERROR_MAX_CHARS]
    with unit_of_work(engine) as session:
        claimed = repo.claim_event(session, inbox_id)
        if claimed is None:
            return
        row = repo.get_event(session, inbox_id)
        assert row is not None  # claimed above
        repo.update_event(
            session,
            inbox_id,
            status=InboxStatus.FAILED,
            attempts=claimed.attempts + 1,
            next_attempt_at=None,
            last_error=error,
            outcome=UNREADABLE,
        )
        raise_exception(
            session,
            rail="card",
            kind=UNREADABLE_EXCEPTION,
            reference=row.event_id,
            details={"event_type": row.event_type, "object_id": row.object_id, "reason": str(exc)},
            now=now,
        )
    log.warning("stripe event %s cannot be read, failed for good: %s", inbox_id, error)


def _record_failure(engine: Engine, inbox_id: int, exc: Exception, settings: Settings, now: datetime) -> None:
    error = f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]
    with unit_of_work(engine) as session:
        claimed = repo.claim_event(session, inbox_id)
        if claimed is None:
            return
        attempts = claimed.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if attempts >= settings.card_inbox_max_attempts:
            row = repo.get_event(session, inbox_id)
            assert row is not None  # claimed above
            values |= {"status": InboxStatus.DEAD, "next_attempt_at": None}
            raise_exception(
                session,
                rail="card",
                kind="webhook_processing_failed",
                reference=card_reference(row.event_id),
                details={"event_type": row.event_type, "attempts": attempts, "last_error": error},
                now=now,
            )
        else:
            values |= {"status": InboxStatus.FAILED, "next_attempt_at": now + backoff(attempts, settings)}
        repo.update_event(session, inbox_id, **values)
    log.warning("stripe event %s failed (attempt %s): %s", inbox_id, attempts, error)


def process_quietly(
    engine: Engine, inbox_id: int, gateway: StripeGateway, settings: Settings, event: EventData | None = None
) -> None:
    """:func:`process_event` for a background task: whatever happens is recorded, nothing escapes."""
    try:
        process_event(engine, inbox_id, gateway, settings, event=event)
    except Exception:
        log.exception("processing stripe event %s right after its acknowledgement failed", inbox_id)


def drain(engine: Engine, gateway: StripeGateway, settings: Settings, now: datetime, batch_size: int) -> int:
    """Process up to ``batch_size`` events that are due (pending past the grace period, or failed and past their
    backoff), :data:`DRAIN_CHUNK` at a time in one unit of work each (:func:`process_batch`), their Stripe reads side
    by side. Returns the events taken. With inline processing off, this is how every event is fulfilled (the API
    only stores and acknowledges), so it keeps up with the webhooks as the API's processor does."""
    with unit_of_work(engine) as session:
        due = repo.payloads_of(session, repo.due_event_ids(session, now, batch_size))
    items: list[tuple[int, EventData]] = []
    for inbox_id, payload in due:
        try:
            items.append((inbox_id, parse_event(payload)))
        except CreditrailError:
            process_event(engine, inbox_id, gateway, settings, now=now)  # fails it, with the reason
    if items:
        with ThreadPoolExecutor(max_workers=READ_CONCURRENCY, thread_name_prefix="card-inbox-read") as pool:
            for start in range(0, len(items), DRAIN_CHUNK):
                process_batch(engine, items[start : start + DRAIN_CHUNK], gateway, settings, pool, now=now)
    return len(due)


# Events the worker's inbox job processes in one unit of work.
DRAIN_CHUNK = 16


def retry_event(engine: Engine, event_id: str, gateway: StripeGateway, settings: Settings) -> str | None:
    """Send a failed or dead event round again now (an admin's action), and process it."""
    now = utcnow()
    with unit_of_work(engine) as session:
        row = repo.event_by_stripe_id(session, event_id)
        if row is None:
            raise WebhookEventNotFound(f"no stored Stripe event {event_id}", event_id=event_id)
        if row.status in (InboxStatus.FAILED, InboxStatus.DEAD):
            repo.update_event(session, row.id, status=InboxStatus.FAILED, next_attempt_at=now)
        inbox_id = row.id
    return process_event(engine, inbox_id, gateway, settings, now=now)


# Stripe reads in flight at once for one API process's inline processing.
READ_CONCURRENCY = 8


class InlineProcessor:
    """Processes stored events right after their acknowledgement, on a few threads of the API process.

    The request path only verifies, stores and acknowledges; an event is then handed to this processor's queue.
    A few threads (not one per request) keep the acknowledgements quick under load: the database round trips are
    what takes time, and a handful of threads overlap them. Under load a thread takes what has queued up, up to
    ``batch_size`` events, in one unit of work (:func:`process_batch`). The queue is bounded: when it is full (or
    the process stops), the event waits in the inbox for the worker's job, after the grace period. Nothing is lost
    either way.
    """

    def __init__(
        self,
        engine: Engine,
        gateway: StripeGateway,
        settings: Settings,
        *,
        threads: int,
        batch_size: int = 16,
        capacity: int = 10_000,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.gateway = gateway
        self.settings = settings
        self._queue: queue.Queue[tuple[int, EventData] | None] = queue.Queue(maxsize=capacity)
        # Stripe reads a batch still needs (a card no event brought), made side by side.
        self._reads = ThreadPoolExecutor(max_workers=READ_CONCURRENCY, thread_name_prefix="card-inbox-read")
        self._threads = [
            threading.Thread(target=self._run, name=f"card-inbox-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inbox_id: int, event: EventData) -> bool:
        """Queue an event for processing; False when the queue is full (the worker's job will take it)."""
        try:
            self._queue.put_nowait((inbox_id, event))
        except queue.Full:
            return False
        return True

    def wait_idle(self) -> None:
        """Block until every queued event has been processed (for tests and orderly shutdowns)."""
        self._queue.join()

    def close(self) -> None:
        for _thread in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._reads.shutdown()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Whatever else is waiting goes in the same batch (under load, one commit serves several events).
            while len(batch) < self.batch_size and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            try:
                if items:
                    process_batch(self.engine, items, self.gateway, self.settings, self._reads)
            except Exception:
                log.exception("processing stripe events %s after their acknowledgement failed", items)
            finally:
                for _item in batch:
                    self._queue.task_done()
            if len(items) < len(batch):
                return
