"""The events' errors."""

from __future__ import annotations

from services.core.errors import CreditrailError, NotFound


class WebhookEndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class WebhookDeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


class EventNotFound(NotFound):
    code = "event_not_found"


class InvalidWebhookUrl(CreditrailError):
    code = "invalid_webhook_url"
    status_code = 400


class UnknownEventType(CreditrailError):
    code = "unknown_event_type"
    status_code = 400
