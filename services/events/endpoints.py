"""The platform's webhooks over HTTP (an admin or platform key): register, list, change and disable endpoints, read
each one's delivery log, resend a delivery, and look events up.

Endpoints and events are named by their public ids (``we_...``, ``evt_...``); deliveries by their number.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from services.api.deps import PlatformKey, SessionDep, SettingsDep
from services.api.pages import Cursor, id_cursor, page_of
from services.api.types import Id, Text
from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.events import repository as repo
from services.events import service
from services.events.errors import EventNotFound
from services.events.models import DeliveryStatus, EventType
from services.events.rows import DeliveryListed, EndpointRow, EventRow
from services.events.schemas import (
    EventOut,
    EventPage,
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointPage,
    WebhookEndpointPatch,
    WebhookEndpointWithSecret,
)

router = APIRouter(prefix="/v1/admin", tags=["webhooks"])

EndpointId = Annotated[Text, Path(min_length=1, max_length=40)]
EventId = Annotated[Text, Path(min_length=1, max_length=40)]
Limit = Annotated[int, Query(ge=1, le=500)]
# What a PATCH may not set to null (a description may be cleared).
_NOT_NULL = ("url", "event_types", "enabled")


def _endpoint_out(row: EndpointRow) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=row.public_id,
        url=row.url,
        event_types=list(row.event_types),
        description=row.description,
        enabled=bool(row.enabled),
        created_at=row.created_at,
    )


def _with_secret(row: EndpointRow, secret: str) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(**_endpoint_out(row).model_dump(), secret=secret)


def _deliveries_out(session: SessionDep, rows: list[DeliveryListed]) -> list[WebhookDeliveryOut]:
    logs = repo.attempts_of(session, [int(row.id) for row in rows])
    return [
        WebhookDeliveryOut(
            id=row.id,
            event_id=row.event_public_id,
            event_type=row.event_type,
            endpoint_id=row.endpoint_public_id,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            attempt_log=[WebhookAttemptOut.model_validate(a, from_attributes=True) for a in logs[int(row.id)]],
        )
        for row in rows
    ]


def _event_out(row: EventRow) -> EventOut:
    return EventOut(
        id=row.public_id, type=row.type, account_id=row.account_id, created_at=row.created_at, data=row.data
    )


@router.post("/webhook-endpoints", status_code=status.HTTP_201_CREATED)
def create_webhook_endpoint(
    body: WebhookEndpointIn, session: SessionDep, settings: SettingsDep, _platform: PlatformKey
) -> WebhookEndpointWithSecret:
    """Register an endpoint for the event types given (``["*"]``: all). Its signing secret is shown this once."""
    row, secret = service.create_endpoint(
        session, settings, url=body.url, event_types=body.event_types, description=body.description, now=utcnow()
    )
    return _with_secret(row, secret)


@router.get("/webhook-endpoints")
def list_webhook_endpoints(
    session: SessionDep, _platform: PlatformKey, cursor: Cursor = None, limit: Limit = 100
) -> WebhookEndpointPage:
    """Every endpoint, oldest first (no secrets)."""
    rows = repo.list_endpoints(session, after_id=id_cursor(cursor) or 0, limit=limit + 1)
    page = page_of(rows, limit, lambda row: row.id)
    return WebhookEndpointPage(
        data=[_endpoint_out(row) for row in page.data], has_more=page.has_more, next_cursor=page.next_cursor
    )


@router.get("/webhook-endpoints/{endpoint_id}")
def get_webhook_endpoint(endpoint_id: EndpointId, session: SessionDep, _platform: PlatformKey) -> WebhookEndpointOut:
    """One endpoint (no secret)."""
    return _endpoint_out(service.require_endpoint(session, endpoint_id))


@router.patch("/webhook-endpoints/{endpoint_id}")
def update_webhook_endpoint(
    endpoint_id: EndpointId,
    body: WebhookEndpointPatch,
    session: SessionDep,
    settings: SettingsDep,
    _platform: PlatformKey,
) -> WebhookEndpointOut:
    """Change an endpoint's url, event types, description, or disable (and enable) it; what is not sent stays."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    nulls = sorted(name for name in _NOT_NULL if name in changes and changes[name] is None)
    if nulls:
        raise InvalidRequest(f"{', '.join(nulls)} cannot be null", field=nulls[0])
    return _endpoint_out(service.update_endpoint(session, settings, endpoint_id, changes))


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret")
def rotate_webhook_secret(
    endpoint_id: EndpointId, session: SessionDep, _platform: PlatformKey
) -> WebhookEndpointWithSecret:
    """A new signing secret, shown this once; the old one signs nothing from now on."""
    row, secret = service.rotate_secret(session, endpoint_id)
    return _with_secret(row, secret)


@router.get("/webhook-endpoints/{endpoint_id}/deliveries")
def list_webhook_deliveries(
    endpoint_id: EndpointId, session: SessionDep, _platform: PlatformKey, cursor: Cursor = None, limit: Limit = 100
) -> WebhookDeliveryPage:
    """The endpoint's delivery log, newest first: each delivery's event, status and attempts, and each attempt's
    time, HTTP status, duration, error and the start of the answer."""
    endpoint = service.require_endpoint(session, endpoint_id)
    rows = repo.list_deliveries(session, int(endpoint.id), before_id=id_cursor(cursor), limit=limit + 1)
    return page_of(_deliveries_out(session, rows), limit, lambda delivery: delivery.id)


@router.post("/webhook-deliveries/{delivery_id}/resend", status_code=status.HTTP_202_ACCEPTED)
def resend_webhook_delivery(delivery_id: Id, session: SessionDep, _platform: PlatformKey) -> WebhookDeliveryOut:
    """Send a delivery again, by the worker's next run (a failed one gets one more attempt; a delivered one is sent
    again, with the same body and event id)."""
    row = service.resend(session, delivery_id, utcnow())
    return _deliveries_out(session, [row])[0]


@router.get("/events")
def list_events(
    session: SessionDep,
    _platform: PlatformKey,
    account_id: Annotated[Id | None, Query()] = None,
    event_type: Annotated[EventType | None, Query(alias="type")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> EventPage:
    """Events, newest first; of one account (``account_id``) and one type (``type``) when asked."""
    rows = repo.list_events(
        session,
        account_id=account_id,
        event_type=str(event_type) if event_type is not None else None,
        before_id=id_cursor(cursor),
        limit=limit + 1,
    )
    page = page_of(rows, limit, lambda row: row.id)
    return EventPage(data=[_event_out(row) for row in page.data], has_more=page.has_more, next_cursor=page.next_cursor)


@router.get("/events/{event_id}")
def get_event(event_id: EventId, session: SessionDep, _platform: PlatformKey) -> EventOut:
    """One event, as the platform's endpoints receive it in ``data``."""
    row = repo.event_by_public_id(session, event_id)
    if row is None:
        raise EventNotFound(f"no event {event_id}", event_id=event_id)
    return _event_out(row)
