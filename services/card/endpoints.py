"""The card rail over HTTP.

Customers (API key, under /v1): the packs, starting a purchase, a purchase and its success-page confirmation, the
purchase history (rail-neutral), auto-recharge settings. Stripe: the webhook, authenticated by its signature only.
Finance and admins: the webhook inbox (listed, or one event looked up by its Stripe id with the purchase it touched)
and retrying an event. Without a Stripe key the card rail is off: what would call Stripe answers 409
``rail_not_configured``.

Endpoints that call Stripe orchestrate several short units of work, and authenticate in a unit of work of their
own, so no transaction is open while Stripe is called.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from services.api.deps import (
    CustomerOrSession,
    CustomerOrSessionOutside,
    EngineDep,
    FinanceKey,
    IdempotencyKey,
    SessionDep,
    SettingsDep,
    get_admin,
    get_principal_outside,
)
from services.api.pages import Cursor, id_cursor, page_of
from services.api.principal import Principal
from services.api.types import Id, Text
from services.card import auto_recharge, purchases
from services.card import repository as repo
from services.card.deps import GatewayDep, InboxGatewayDep, app_gateway, require_rail
from services.card.errors import (
    PurchaseNotConfirmable,
    WebhookEventNotFound,
    WebhookPayloadTooLarge,
)
from services.card.flows import checkout, inbox
from services.card.flows.inbox import InlineProcessor
from services.card.flows.intake import InboxWriter
from services.card.fulfilment import fulfil_checkout_session
from services.card.models import InboxStatus, PurchaseStatus
from services.card.packs import CUSTOM_STEP_CREDITS, PACKS, resolve_pack
from services.card.schemas import (
    AutoRechargeIn,
    AutoRechargeOut,
    ConfirmIn,
    ConfirmOut,
    CustomAmountOut,
    InboxPurchaseOut,
    PackOut,
    PacksOut,
    PurchaseIn,
    PurchaseOut,
    RetryOut,
    WebhookAck,
    WebhookEventDetailOut,
    WebhookEventOut,
    WebhookEventPage,
)
from services.card.stripe_objects import EventData
from services.card.webhooks import MAX_PAYLOAD_BYTES, Receipt, parse_event, store_event, verify_signature
from services.core import metrics
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.money import CREDITS_PER_USD
from services.core.settings import Settings

router = APIRouter(prefix="/v1", tags=["card"])
webhook_router = APIRouter(prefix="/v1/stripe", tags=["stripe"])
admin_router = APIRouter(prefix="/v1/admin/card", tags=["admin"])

REPLAYED_HEADER = "Idempotent-Replayed"


_processor_lock = threading.Lock()


def get_processor(request: Request) -> InlineProcessor:
    """The app's processor of freshly stored events (started on first use)."""
    state = request.app.state
    with _processor_lock:
        processor = getattr(state, "card_processor", None)
        if not isinstance(processor, InlineProcessor):
            settings = state.settings
            threads = settings.card_inline_processing_threads
            processor = InlineProcessor(state.engine, app_gateway(request), settings, threads=threads)
            state.card_processor = processor
        return processor


def _admin(principal: Annotated[Principal, Depends(get_principal_outside)]) -> Principal:
    return get_admin(principal)


AdminOutside = Annotated[Principal, Depends(_admin)]


def _account(principal: Principal) -> int:
    assert principal.account_id is not None  # guaranteed by the customer dependencies
    return principal.account_id


def _purchase_out(view: purchases.PurchaseView, replayed: bool = False) -> PurchaseOut:
    return PurchaseOut.model_validate(view.model_dump(exclude={"account_id"}) | {"replayed": replayed})


# --- customers ---------------------------------------------------------------------------------------------


@router.get("/card/packs")
def list_packs(_principal: CustomerOrSession, settings: SettingsDep) -> PacksOut:
    return PacksOut(
        packs=[
            PackOut(code=p.code, name=p.name, amount_credits=p.amount_credits, amount_cents=p.amount_cents)
            for p in PACKS.values()
        ],
        custom=CustomAmountOut(
            min_credits=settings.card_custom_min_credits,
            max_credits=settings.card_custom_max_credits,
            step_credits=CUSTOM_STEP_CREDITS,
        ),
        credits_per_usd=CREDITS_PER_USD,
    )


@router.post("/card/purchases", status_code=status.HTTP_201_CREATED)
def start_purchase(
    body: PurchaseIn,
    principal: CustomerOrSessionOutside,
    key: IdempotencyKey,
    engine: EngineDep,
    settings: SettingsDep,
    gateway: GatewayDep,
    response: Response,
) -> PurchaseOut:
    """Record the purchase, create its Stripe Checkout Session, and return the session's URL (``checkout_url``).
    Retry with the same Idempotency-Key after an error: the same purchase and session come back."""
    pack = resolve_pack(body.pack, body.amount_credits, settings)
    view, replayed = checkout.start_checkout(
        engine,
        gateway,
        settings,
        account_id=_account(principal),
        pack=pack,
        save_card=body.save_card,
        idempotency_key=key,
    )
    if replayed:  # answered as the first time (201), marked as a replay
        response.headers[REPLAYED_HEADER] = "true"
    return _purchase_out(view, replayed)


@router.get("/card/purchases/{purchase_id}")
def get_purchase(purchase_id: Id, session: SessionDep, principal: CustomerOrSession) -> PurchaseOut:
    return _purchase_out(purchases.get_purchase(session, _account(principal), purchase_id))


@router.post("/card/purchases/{purchase_id}/confirm")
def confirm_purchase(
    purchase_id: Id,
    principal: CustomerOrSessionOutside,
    engine: EngineDep,
    gateway: GatewayDep,
    body: ConfirmIn | None = None,
) -> ConfirmOut:
    """The success page: read the Checkout Session from Stripe and fulfil it now, rather than wait for the
    webhook (the same fulfilment: it mints once whoever comes first)."""
    account_id = _account(principal)
    with unit_of_work(engine) as session:
        current = purchases.get_purchase(session, account_id, purchase_id)
    if current.status == PurchaseStatus.COMPLETED:
        return ConfirmOut(purchase=_purchase_out(current), outcome="already_fulfilled")
    session_id = current.checkout_session_id or (body.session_id if body else None)
    if session_id is None:
        raise PurchaseNotConfirmable(
            f"purchase {purchase_id} has no Checkout Session to confirm", purchase_id=purchase_id
        )
    data = gateway.retrieve_checkout_session(session_id)
    if data.purchase_id != purchase_id and data.id != current.checkout_session_id:
        raise PurchaseNotConfirmable("that Checkout Session is not this purchase's", purchase_id=purchase_id)
    with unit_of_work(engine) as session:
        outcome = fulfil_checkout_session(session, data, now=utcnow())
        latest = purchases.get_purchase(session, account_id, purchase_id)
    return ConfirmOut(purchase=_purchase_out(latest), outcome=outcome.code)


@router.get("/card/auto-recharge")
def get_auto_recharge(session: SessionDep, principal: CustomerOrSession) -> AutoRechargeOut:
    """The account's auto-recharge settings and state, with the last failure (a decline, or the bank asking for
    authentication) and why it turned itself off, if it did."""
    return auto_recharge.get_view(session, _account(principal))


@router.put("/card/auto-recharge")
def set_auto_recharge(
    body: AutoRechargeIn, session: SessionDep, principal: CustomerOrSession, settings: SettingsDep
) -> AutoRechargeOut:
    """Turning auto-recharge on needs the card rail (it charges through Stripe); turning it off never does."""
    if body.enabled:
        require_rail(settings)
    return auto_recharge.configure(
        session,
        _account(principal),
        enabled=body.enabled,
        threshold_credits=body.threshold_credits,
        pack=body.pack,
        now=utcnow(),
    )


# --- Stripe ------------------------------------------------------------------------------------------------


async def _raw_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_PAYLOAD_BYTES:
        raise WebhookPayloadTooLarge(f"a webhook body is at most {MAX_PAYLOAD_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_PAYLOAD_BYTES:
        raise WebhookPayloadTooLarge(f"a webhook body is at most {MAX_PAYLOAD_BYTES} bytes")
    return body


def get_writer(request: Request) -> InboxWriter:
    """The app's writer of verified webhook events to the inbox (started on first use)."""
    state = request.app.state
    with _processor_lock:
        writer = getattr(state, "card_inbox_writer", None)
        if not isinstance(writer, InboxWriter):
            writer = InboxWriter(state.engine, state.settings)
            state.card_inbox_writer = writer
        return writer


def _store(engine: Engine, settings: Settings, event: EventData, payload: str) -> Receipt:
    with unit_of_work(engine) as session:
        return store_event(session, event, payload, source="webhook", now=utcnow(), settings=settings)


@webhook_router.post("/webhook", response_model=WebhookAck)
async def stripe_webhook(request: Request, stripe_signature: Annotated[str | None, Header()] = None) -> Response:
    """Stripe's webhook: the signature is verified over the raw body (400, nothing stored, when it is missing,
    wrong or stale), the event stored once by its id and acknowledged after the commit; it is processed
    afterwards, off the request path. Verifying and parsing take microseconds and run here; storing is the
    inbox writer's (several requests' events in one commit under load, services.card.flows.intake)."""
    body = await _raw_body(request)
    settings: Settings = request.app.state.settings
    payload = verify_signature(body, stripe_signature, settings, time.time())
    event = parse_event(payload)
    stored = get_writer(request).submit(event, payload)
    if stored is not None:
        receipt = await asyncio.wrap_future(stored)
    else:
        receipt = await run_in_threadpool(_store, request.app.state.engine, settings, event, payload)
    metrics.card_webhook_received(duplicate=receipt.duplicate)
    if settings.card_process_webhooks_inline and receipt.status == InboxStatus.PENDING:
        get_processor(request).submit(receipt.inbox_id, event)
    ack = WebhookAck(
        received=True,
        event_id=receipt.event_id,
        event_type=receipt.event_type,
        status=receipt.status,
        duplicate=receipt.duplicate,
    )
    return Response(ack.model_dump_json(), media_type="application/json")


# --- finance and admins ------------------------------------------------------------------------------------


InboxStatusFilter = Literal["pending", "processed", "ignored", "failed", "dead"]


@admin_router.get("/webhook-events")
def list_webhook_events(
    session: SessionDep,
    _finance: FinanceKey,
    status_filter: Annotated[InboxStatusFilter | None, Query(alias="status")] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WebhookEventPage:
    """Stored Stripe events, oldest first, e.g. ``?status=failed`` (with why each failed, in ``last_error``), with a
    count per status. Pass ``next_cursor`` back as ``cursor`` for the next page."""
    rows = repo.list_events(session, status=status_filter, limit=limit + 1, after_id=id_cursor(cursor) or 0)
    page = page_of([WebhookEventOut.model_validate(row, from_attributes=True) for row in rows], limit, lambda e: e.id)
    return WebhookEventPage(**dict(page), counts=repo.count_events_by_status(session))


@admin_router.get("/webhook-events/{event_id}")
def get_webhook_event(
    event_id: Annotated[Text, Path(min_length=1, max_length=255)], session: SessionDep, _finance: FinanceKey
) -> WebhookEventDetailOut:
    """One stored Stripe event by its Stripe id: status, attempts, the last error, when it was received and
    processed, and the purchase it touched."""
    row = repo.event_by_stripe_id(session, event_id)
    if row is None:
        raise WebhookEventNotFound(f"no stored Stripe event {event_id}", event_id=event_id)
    purchase = repo.get_purchase(session, row.purchase_id) if row.purchase_id is not None else None
    return WebhookEventDetailOut(
        **WebhookEventOut.model_validate(row, from_attributes=True).model_dump(),
        purchase=InboxPurchaseOut.model_validate(purchase, from_attributes=True) if purchase is not None else None,
    )


@admin_router.post("/webhook-events/{event_id}/retry")
def retry_webhook_event(
    event_id: Annotated[Text, Path(max_length=255)],
    _admin_key: AdminOutside,
    engine: EngineDep,
    settings: SettingsDep,
    gateway: InboxGatewayDep,
) -> RetryOut:
    """Process a failed or dead event again now."""
    return RetryOut(event_id=event_id, outcome=inbox.retry_event(engine, event_id, gateway, settings))


ROUTERS = (router, webhook_router, admin_router)
