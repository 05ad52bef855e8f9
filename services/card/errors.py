"""The card rail's errors. Each has a stable code and its HTTP status; the API renders them all the same way."""

from __future__ import annotations

from services.core.errors import Conflict, CreditrailError, InvalidRequest, NotFound, UpstreamUnavailable


class UnknownPack(InvalidRequest):
    code = "unknown_pack"


class InvalidCustomAmount(InvalidRequest):
    code = "invalid_custom_amount"


class PurchaseNotFound(NotFound):
    code = "purchase_not_found"


class PurchaseNotConfirmable(Conflict):
    """The success page asked about a purchase that has no Checkout Session (yet)."""

    code = "purchase_not_confirmable"


class StripeUnavailable(UpstreamUnavailable):
    """Stripe answered with a server error (after the client's own retries)."""

    code = "stripe_unavailable"


class StripeTimeout(UpstreamUnavailable):
    """Stripe could not be reached, or did not answer in time."""

    code = "stripe_timeout"
    status_code = 504


class StripeRejected(UpstreamUnavailable):
    """Stripe refused our request (a configuration problem on our side, not the customer's)."""

    code = "stripe_rejected"


class StripeInvalidResponse(UpstreamUnavailable):
    """Stripe answered with something we cannot use (a Checkout Session with no URL to pay at)."""

    code = "stripe_invalid_response"


class WebhookRefused(CreditrailError):
    """Base of every refused webhook delivery: Stripe gets a 400, nothing is stored."""

    code = "webhook_refused"
    status_code = 400


class SignatureMissing(WebhookRefused):
    code = "missing_signature"


class SignatureInvalid(WebhookRefused):
    code = "invalid_signature"


class SignatureStale(WebhookRefused):
    code = "stale_signature"


class MalformedEvent(WebhookRefused):
    code = "malformed_event"


class WebhookPayloadTooLarge(WebhookRefused):
    code = "payload_too_large"
    status_code = 413


class NoSavedCard(Conflict):
    code = "no_saved_card"


class WebhookEventNotFound(NotFound):
    code = "webhook_event_not_found"


class RailNotConfigured(Conflict):
    """No Stripe secret key is set: the card rail is off, and nothing that would call Stripe is recorded."""

    code = "rail_not_configured"
