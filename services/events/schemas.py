"""The events' API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from services.api.pages import Page
from services.api.types import Text

Url = Annotated[Text, Field(min_length=1, max_length=2000)]
EventTypes = Annotated[list[Annotated[Text, Field(max_length=64)]], Field(min_length=1, max_length=20)]
Description = Annotated[Text, Field(max_length=500)]


class WebhookEndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where deliveries are POSTed: http(s), https in production, no credentials in it.
    url: Url
    # The event types it receives (e.g. "purchase.completed"), or ["*"] for all.
    event_types: EventTypes
    description: Description | None = None


class WebhookEndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    # A disabled endpoint receives nothing: no delivery is written for it, and those pending wait.
    enabled: StrictBool | None = None


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    created_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    # The signing secret (``whsec_...``), shown this once: keep it to check each delivery's signature.
    secret: str


class WebhookAttemptOut(BaseModel):
    attempted_at: datetime
    # The endpoint's HTTP status; null when no answer came (refused, timed out).
    status_code: int | None
    duration_ms: int
    error: str | None
    # The start of the endpoint's answer.
    response_excerpt: str | None


class WebhookDeliveryOut(BaseModel):
    id: int
    event_id: str
    event_type: str
    endpoint_id: str
    # pending, delivered or failed (for good, after the retry schedule).
    status: str
    attempts: int
    # When the next attempt is due (pending deliveries only).
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    # Every attempt, oldest first.
    attempt_log: list[WebhookAttemptOut]


class EventOut(BaseModel):
    id: str
    type: str
    account_id: int
    created_at: datetime
    data: dict[str, Any]


WebhookEndpointPage = Page[WebhookEndpointOut]
WebhookDeliveryPage = Page[WebhookDeliveryOut]
EventPage = Page[EventOut]
