"""Receiving Stripe's webhooks: verify the signature over the raw body, store the event once, acknowledge.

- The ``Stripe-Signature`` header is checked with ``stripe.WebhookSignature.verify_header`` against every configured
  endpoint secret (several are accepted during a rotation) and the configured tolerance. A missing, malformed or
  wrong signature, and one too old, are refused with 400 and nothing is stored. The SDK does not refuse timestamps
  from the future, so one further ahead than the allowed clock skew is refused here.
- A verified event is stored in the inbox (``stripe_webhook_events``), unique by its event id: a redelivery or a
  replay stores nothing new. Event types the rail does not act on are stored as ``ignored``. An event the rail acts
  on whose object cannot be read (no id, another kind of object) is stored ``failed`` at once, for good, with its
  reason and a finance exception: still acknowledged, so Stripe stops sending it, and never retried by itself.
- Processing happens afterwards, off the request path (services.card.flows.inbox).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlmodel import Session

from services.card import repository as repo
from services.card import stripe_json
from services.card.errors import MalformedEvent, SignatureInvalid, SignatureMissing, SignatureStale
from services.card.models import InboxStatus
from services.card.rows import InboxEventRef
from services.card.stripe_objects import UNREADABLE, EventData, from_unix, unreadable_reason
from services.core.settings import Settings
from services.review.service import raise_exception

# What the card rail acts on; every other event is acknowledged, recorded as ignored, and left alone.
HANDLED_EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
)

MAX_PAYLOAD_BYTES = 512 * 1024
# The finance exception an event whose object cannot be read raises.
UNREADABLE_EXCEPTION = "webhook_unreadable"


def _signature_timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify_signature(raw_body: bytes, header: str | None, settings: Settings, now_unix: float) -> str:
    """The body as text when ``header`` signs it with one of our secrets, recently enough; raises otherwise."""
    if not header or not header.strip():
        raise SignatureMissing("the Stripe-Signature header is missing")
    try:
        payload = raw_body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEvent("the body is not UTF-8 text") from exc
    timestamp = _signature_timestamp(header)
    if timestamp is None:
        raise SignatureInvalid("the Stripe-Signature header is malformed")
    secrets = [secret.get_secret_value() for secret in settings.stripe_webhook_secrets]
    tolerance = settings.stripe_webhook_tolerance_seconds
    if not any(_verifies(payload, header, secret, tolerance) for secret in secrets):
        if any(_verifies(payload, header, secret, None) for secret in secrets):
            raise SignatureStale(
                f"the signature is older than {tolerance} seconds", signed_at=timestamp, tolerance_seconds=tolerance
            )
        raise SignatureInvalid("no signature in the Stripe-Signature header matches the body")
    skew = settings.stripe_webhook_future_tolerance_seconds
    if timestamp > now_unix + skew:
        raise SignatureStale(
            f"the signature is dated more than {skew} seconds in the future", signed_at=timestamp, skew_seconds=skew
        )
    return payload


def _verifies(payload: str, header: str, secret: str, tolerance: int | None) -> bool:
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
    except stripe.SignatureVerificationError:
        return False
    return True


def parse_event(payload: str) -> EventData:
    try:
        decoded: Any = stripe_json.loads(payload)
    except ValueError as exc:
        raise MalformedEvent("the body is not JSON") from exc
    if not isinstance(decoded, dict):
        raise MalformedEvent("the body is not a Stripe event")
    try:
        return EventData.parse(decoded)
    except ValueError as exc:
        raise MalformedEvent(f"the body is not a Stripe event: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Receipt:
    inbox_id: int
    event_id: str
    event_type: str
    status: str
    duplicate: bool


def _inbox_row(event: EventData, payload: str, *, source: str, now: datetime, settings: Settings) -> dict[str, Any]:
    handled = event.type in HANDLED_EVENT_TYPES
    unreadable = unreadable_reason(event) if handled else None
    if unreadable is not None:
        # Processing would fail the same way every time: failed at once, for good (services.card.flows.inbox).
        return _unreadable_row(event, payload, unreadable, source=source, now=now)
    grace = settings.card_inbox_grace_seconds if settings.card_process_webhooks_inline and source == "webhook" else 0
    return {
        "event_id": event.id,
        "event_type": event.type,
        "livemode": event.livemode,
        "api_version": event.api_version,
        "object_id": event.object_id,
        "stripe_created_at": from_unix(event.created),
        "source": source,
        "payload": payload,
        "status": InboxStatus.PENDING if handled else InboxStatus.IGNORED,
        "attempts": 0,
        "next_attempt_at": now + timedelta(seconds=grace) if handled else None,
        "outcome": None if handled else "unhandled_event_type",
        "received_at": now,
        "processed_at": None if handled else now,
    }


def _unreadable_row(event: EventData, payload: str, reason: str, *, source: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "event_type": event.type,
        "livemode": event.livemode,
        "api_version": event.api_version,
        "object_id": event.object_id,
        "stripe_created_at": from_unix(event.created),
        "source": source,
        "payload": payload,
        "status": InboxStatus.FAILED,
        "attempts": 1,
        "next_attempt_at": None,
        "last_error": f"{UNREADABLE}: {reason}"[:2000],
        "outcome": UNREADABLE,
        "received_at": now,
        "processed_at": None,
    }


def _report_unreadable(session: Session, values: dict[str, Any], now: datetime) -> None:
    """Tell finance of an event stored as unreadable (once per event)."""
    raise_exception(
        session,
        rail="card",
        kind=UNREADABLE_EXCEPTION,
        reference=str(values["event_id"]),
        details={
            "event_type": values["event_type"],
            "object_id": values["object_id"],
            "reason": str(values["last_error"]).removeprefix(f"{UNREADABLE}: "),
        },
        now=now,
    )


def store_event(
    session: Session, event: EventData, payload: str, *, source: str, now: datetime, settings: Settings
) -> Receipt:
    """Store a verified event once. A new event we act on is pending: processed right after the commit (when
    inline processing is on), or by the worker's inbox job once the grace period has passed."""
    values = _inbox_row(event, payload, source=source, now=now, settings=settings)
    inbox_id = repo.insert_event(session, values)
    if inbox_id is not None:
        if values["outcome"] == UNREADABLE:
            _report_unreadable(session, values, now)
        return Receipt(inbox_id, event.id, event.type, str(values["status"]), duplicate=False)
    existing = repo.event_by_stripe_id(session, event.id)
    assert existing is not None  # the insert found it there
    return Receipt(existing.id, event.id, existing.event_type, existing.status, duplicate=True)


def store_events(
    session: Session, items: Sequence[tuple[EventData, str]], *, source: str, now: datetime, settings: Settings
) -> list[Receipt]:
    """:func:`store_event` for several events at once (one multi-row INSERT, and one read of those stored
    already); a receipt for each item, in order. The same event given twice is stored once: the second receipt
    is a duplicate's."""
    rows: dict[str, dict[str, Any]] = {}
    for event, payload in items:
        if event.id not in rows:
            rows[event.id] = _inbox_row(event, payload, source=source, now=now, settings=settings)
    inserted = repo.insert_events(session, list(rows.values()))
    for event_id in inserted:
        if rows[event_id]["outcome"] == UNREADABLE:
            _report_unreadable(session, rows[event_id], now)
    stored: dict[str, InboxEventRef | _Stored] = {
        row.event_id: row for row in repo.events_by_stripe_ids(session, [i for i in rows if i not in inserted])
    }
    receipts: list[Receipt] = []
    for event, _payload in items:
        inbox_id = inserted.pop(event.id, None)
        if inbox_id is not None:
            receipts.append(Receipt(inbox_id, event.id, event.type, str(rows[event.id]["status"]), duplicate=False))
            stored[event.id] = _Stored(inbox_id, event.type, str(rows[event.id]["status"]))
        else:
            existing = stored[event.id]
            receipts.append(Receipt(existing.id, event.id, existing.event_type, existing.status, duplicate=True))
    return receipts


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    event_type: str
    status: str
