"""Recording events, inside the caller's transaction (the one that made the change they report).

:func:`record_event` writes the event once per dedupe key and, with it, one pending delivery for every enabled
webhook endpoint that wants its type: the event and its deliveries exist exactly when the change does. Nothing here
commits or sends; the worker delivers. The platform's endpoints are registered, changed and resent to from here
too (services.events.endpoints is their HTTP side).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.settings import Settings
from services.core.urls import outside_url_problem
from services.events import repository as repo
from services.events.errors import InvalidWebhookUrl, UnknownEventType, WebhookDeliveryNotFound, WebhookEndpointNotFound
from services.events.models import ALL_EVENT_TYPES, EventType
from services.events.rows import DeliveryListed, EndpointRow


def new_public_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def wants(event_types: list[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to ``event_types`` receives an event of ``event_type``."""
    return ALL_EVENT_TYPES in event_types or event_type in event_types


def record_event(
    session: Session,
    *,
    event_type: EventType,
    account_id: int,
    data: Mapping[str, Any],
    dedupe_key: str,
    now: datetime,
) -> bool:
    """Record that ``event_type`` happened to ``account_id`` (``data``: the event's object, JSON-ready, amounts as
    integers), once per ``dedupe_key``; whether it was recorded now (False: a retried change, already recorded)."""
    event_id = repo.insert_event(
        session,
        {
            "public_id": new_public_id("evt"),
            "dedupe_key": dedupe_key,
            "type": str(event_type),
            "account_id": account_id,
            "data": dict(data),
            "created_at": now,
        },
    )
    if event_id is None:
        return False
    targets = [row.id for row in repo.enabled_endpoints(session) if wants(list(row.event_types), event_type)]
    repo.insert_deliveries(session, event_id, targets, now)
    return True


# The platform's endpoints, managed through the admin API.

SECRET_PREFIX = "whsec"  # noqa: S105 - the prefix of generated secrets, not a secret
MAX_URL_LENGTH = 2000


def new_secret() -> str:
    return f"{SECRET_PREFIX}_{secrets.token_urlsafe(32)}"


def check_url(settings: Settings, url: str) -> str:
    """An endpoint's URL: absolute http(s), https in production, no credentials; 400 ``invalid_webhook_url``."""
    problem = outside_url_problem(settings, url, max_length=MAX_URL_LENGTH)
    if problem is not None:
        raise InvalidWebhookUrl(f"url {problem}", field="url")
    return url


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The types an endpoint asks for, each known (or ``*``: all), in the order given, once each; 400
    ``unknown_event_type`` otherwise."""
    known = {str(event_type) for event_type in EventType} | {ALL_EVENT_TYPES}
    unknown = sorted({event_type for event_type in event_types if event_type not in known})
    if unknown:
        raise UnknownEventType(
            f"unknown event types: {', '.join(unknown)}", unknown=unknown, known=sorted(known), field="event_types"
        )
    if not event_types:
        raise UnknownEventType("event_types must name at least one event type (or '*')", field="event_types")
    return list(dict.fromkeys(event_types))


def require_endpoint(session: Session, public_id: str) -> EndpointRow:
    row = repo.endpoint_by_public_id(session, public_id)
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {public_id}", endpoint_id=public_id)
    return row


def create_endpoint(
    session: Session,
    settings: Settings,
    *,
    url: str,
    event_types: Sequence[str],
    description: str | None,
    now: datetime,
) -> tuple[EndpointRow, str]:
    """Register an endpoint; its row and its signing secret (shown this once)."""
    values = {
        "public_id": new_public_id("we"),
        "url": check_url(settings, url),
        "event_types": check_event_types(event_types),
        "description": description,
        "enabled": True,
        "secret": new_secret(),
        "created_at": now,
    }
    repo.insert_endpoint(session, values)
    return require_endpoint(session, str(values["public_id"])), str(values["secret"])


def update_endpoint(session: Session, settings: Settings, public_id: str, changes: Mapping[str, Any]) -> EndpointRow:
    """Change an endpoint's url, event types, description or whether it is enabled (the keys ``changes`` has)."""
    row = require_endpoint(session, public_id)
    values = dict(changes)
    if "url" in values:
        values["url"] = check_url(settings, values["url"])
    if "event_types" in values:
        values["event_types"] = check_event_types(values["event_types"])
    if values:
        repo.update_endpoint(session, int(row.id), **values)
    return require_endpoint(session, public_id)


def rotate_secret(session: Session, public_id: str) -> tuple[EndpointRow, str]:
    """A new signing secret for an endpoint (shown this once); the old one stops signing at once."""
    row = require_endpoint(session, public_id)
    secret = new_secret()
    repo.update_endpoint(session, int(row.id), secret=secret)
    return row, secret


def resend(session: Session, delivery_id: int, now: datetime) -> DeliveryListed:
    """Send a delivery again now (the worker's next run), whatever its status: a failed one gets one more attempt, a
    delivered one is sent again with the same body and event id."""
    if repo.get_delivery(session, delivery_id) is None:
        raise WebhookDeliveryNotFound(f"no webhook delivery {delivery_id}", delivery_id=delivery_id)
    repo.requeue(session, delivery_id, now)
    requeued = repo.get_delivery(session, delivery_id)
    assert requeued is not None  # found above, in this transaction
    return requeued
