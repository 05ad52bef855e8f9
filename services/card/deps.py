"""The card rail's request dependencies: the app's Stripe gateway, and the refusal of a request that needs the rail
when no Stripe key is configured. Card and finance endpoints both take the gateway from here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.api.openapi import declare_dependency_errors
from services.card.errors import RailNotConfigured
from services.card.stripe_client import StripeGateway, default_gateway
from services.core.settings import Settings


def require_rail(settings: Settings) -> None:
    """Refuse (409 ``rail_not_configured``) when no Stripe key is configured: the card rail is off."""
    if not settings.stripe_configured:
        raise RailNotConfigured("card payments are not set up here (no Stripe key is configured)", rail="card")


def app_gateway(request: Request) -> StripeGateway:
    """The app's Stripe gateway (``app.state.stripe_gateway`` when one was set, else built from settings)."""
    gateway = getattr(request.app.state, "stripe_gateway", None)
    if isinstance(gateway, StripeGateway):
        return gateway
    return default_gateway(request.app.state.settings)


def get_gateway(request: Request) -> StripeGateway:
    """The app's Stripe gateway, for a request that calls Stripe. With no Stripe key configured the card rail is
    off: such a request is refused at once (409 ``rail_not_configured``), before anything is recorded."""
    require_rail(request.app.state.settings)
    return app_gateway(request)


declare_dependency_errors(get_gateway, 409, 502, 504)
declare_dependency_errors(app_gateway, 502, 504)
GatewayDep = Annotated[StripeGateway, Depends(get_gateway)]
# For processing stored events, which goes on with the rail off (as the webhook's own processing does).
InboxGatewayDep = Annotated[StripeGateway, Depends(app_gateway)]
