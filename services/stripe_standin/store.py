"""The stand-in's objects and Stripe's side of a payment, in memory behind one lock.

Objects are built from Stripe's real shapes (``shapes/``, from Stripe's public OpenAPI fixtures) with the fields
that matter filled in. Paying moves money as Stripe does: a PaymentIntent, a charge with the card's brand and last
four digits, and a balance transaction with Stripe's fee (2.9% + 30 cents on a US card) and the net. Every change a
Stripe account would announce is recorded as an event (listed by ``events.list``) and handed to ``on_event`` (the
webhook sender). ``clock`` gives the time in Unix seconds (tests move it).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from services.stripe_standin.cards import (
    DECLINE_MESSAGES,
    TEST_CARDS,
    TEST_PAYMENT_METHODS,
    Behaviour,
    TestCard,
    cvc_valid,
    luhn_valid,
    normalise_number,
    parse_expiry,
)
from services.stripe_standin.errors import StripeApiError, invalid, missing

SHAPES = Path(__file__).parent / "shapes"
CARD_FEE_PERCENT_TENTHS = 29
CARD_FEE_FIXED_CENTS = 30
AVAILABLE_AFTER_SECONDS = 2 * 86_400
SESSION_TTL_SECONDS = 86_400
SESSION_TTL_MIN_SECONDS = 30 * 60
MIN_CHARGE_CENTS = 50
LIST_LIMIT_DEFAULT = 10
LIST_LIMIT_MAX = 100
CHECKOUT_PATH = "/c/pay/"
_ID_ALPHABET = string.ascii_letters + string.digits
# The fields ``expand[]`` may name (those holding another object's id), as in Stripe's API.
EXPANDABLE = frozenset(
    {"balance_transaction", "charge", "customer", "latest_charge", "payment_intent", "payment_method", "source"}
)
MAX_EXPAND_DEPTH = 4


@functools.cache
def _shape_text(name: str) -> str:
    return (SHAPES / f"{name}.json").read_text(encoding="utf-8")


def shape(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_shape_text(name))
    return loaded


def card_fee_cents(amount_cents: int) -> int:
    """Stripe's fee on a US card charge: 2.9% (rounded half up to a cent) + 30 cents."""
    return (amount_cents * CARD_FEE_PERCENT_TENTHS + 500) // 1000 + CARD_FEE_FIXED_CENTS


def _int_param(params: dict[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.lstrip("-").isdigit():
        raise invalid(f"Invalid integer: {value}", param=name)
    number = int(value)
    if minimum is not None and number < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", param=name)
    return number


def _bool_param(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if value in (None, "", "false"):
        return False
    if value == "true":
        return True
    raise invalid(f"Invalid boolean: {value}", param=name)


def _metadata(params: dict[str, Any], name: str = "metadata") -> dict[str, str]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise invalid("Invalid metadata: it must be a hash of strings", param=name)
    return dict(value)


class PayOutcome(StrEnum):
    PAID = "paid"
    DECLINED = "declined"
    INVALID = "invalid"
    REQUIRES_ACTION = "requires_action"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PayResult:
    outcome: PayOutcome
    message: str = ""
    redirect_url: str | None = None


@dataclass(frozen=True, slots=True)
class CheckoutView:
    """What the checkout page shows of a session."""

    id: str
    status: str
    payment_status: str
    amount_total_cents: int
    currency: str
    product_name: str
    saves_card: bool
    awaiting_authentication: bool
    cancel_url: str | None
    expires_at: int


@dataclass
class _SessionExtra:
    """What Stripe keeps of a session's creation that the session object does not show."""

    product_name: str
    intent_metadata: dict[str, str]
    setup_future_usage: str | None
    intent_description: str | None
    pending_card: tuple[TestCard, int, int] | None = None


@dataclass
class _Replay:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class Store:
    api_version: str = "2026-10-28.endive"
    clock: Callable[[], float] = time.time
    on_event: Callable[[dict[str, Any]], None] | None = None
    session_ttl_seconds: int = SESSION_TTL_SECONDS
    lock: threading.RLock = field(default_factory=threading.RLock)
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    _order: dict[str, int] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _sessions: dict[str, _SessionExtra] = field(default_factory=dict)
    _cards: dict[str, TestCard] = field(default_factory=dict)
    _replays: dict[str, _Replay] = field(default_factory=dict)

    # --- basics ------------------------------------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{''.join(secrets.choice(_ID_ALPHABET) for _ in range(24))}"

    def _put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        self._order[obj["id"]] = next(self._seq)
        return obj

    def _get(self, kind: str, object_id: str, *, param: str | None = None) -> dict[str, Any]:
        found = self.objects.get(kind, {}).get(object_id)
        if found is None:
            raise missing(kind, object_id, param)
        return found

    def retrieve(self, kind: str, object_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            return self._expanded(copy.deepcopy(self._get(kind, object_id)), params or {})

    def _expanded(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """``obj`` (a copy) with the ids ``expand[]`` names replaced by their objects, as Stripe answers: a path of
        fields joined by dots (``payment_intent.latest_charge``), starting with ``data`` on a list."""
        expand = params.get("expand")
        paths = expand if isinstance(expand, list) else [expand] if isinstance(expand, str) else []
        for path in paths:
            names = str(path).split(".")
            fields = names[1:] if obj.get("object") == "list" and names[0] == "data" else names
            if len(names) > MAX_EXPAND_DEPTH or not fields or any(name not in EXPANDABLE for name in fields):
                raise invalid(f"This property cannot be expanded ({path}).", param="expand")
            for item in obj["data"] if fields is not names else [obj]:
                self._expand(item, fields)
        return obj

    def _expand(self, obj: dict[str, Any], fields: list[str]) -> None:
        value = obj.get(fields[0])
        if isinstance(value, str):
            found = self._find_any(value)
            if found is not None:
                value = obj[fields[0]] = copy.deepcopy(found)
        if isinstance(value, dict) and len(fields) > 1:
            self._expand(value, fields[1:])

    def retrieve_event(self, event_id: str) -> dict[str, Any]:
        with self.lock:
            for event in self.events:
                if event["id"] == event_id:
                    return copy.deepcopy(event)
            raise missing("event", event_id)

    def _event(self, event_type: str, obj: dict[str, Any]) -> None:
        event = shape("event") | {
            "id": self._new_id("evt"),
            "type": event_type,
            "created": self.now(),
            "api_version": self.api_version,
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
        }
        self.events.append(event)
        self._order[event["id"]] = next(self._seq)
        if self.on_event is not None:
            self.on_event(copy.deepcopy(event))

    def idempotent(
        self, key: str | None, request: str, params: dict[str, Any], produce: Callable[[], dict[str, Any]]
    ) -> tuple[int, dict[str, Any], bool]:
        """(status, body, replayed) of a POST: with an Idempotency-Key already seen for the same request, the first
        answer again (errors included); for other parameters, Stripe's idempotency error."""
        fingerprint = hashlib.sha256(json.dumps([request, params], sort_keys=True).encode()).hexdigest()
        with self.lock:
            if key is not None and key in self._replays:
                replay = self._replays[key]
                if replay.fingerprint != fingerprint:
                    error = StripeApiError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                    )
                    return error.status, error.body(), False
                return replay.status, copy.deepcopy(replay.body), True
            try:
                status, body = 200, produce()
            except StripeApiError as exc:
                status, body = exc.status, exc.body()
            if key is not None:
                self._replays[key] = _Replay(fingerprint, status, copy.deepcopy(body))
            return status, body, False

    # --- lists -------------------------------------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        """Newest first, within ``created`` bounds, after ``starting_after`` (or before ``ending_before``), at most
        ``limit`` (1 to 100, 10 by default)."""
        created = params.get("created")
        bounds: dict[str, int] = {}
        if isinstance(created, dict):
            for op in ("gt", "gte", "lt", "lte"):
                if op in created:
                    bounds[op] = _int_param(created, op) or 0
        elif created is not None:
            bounds["gte"] = bounds["lte"] = _int_param(params, "created") or 0

        def within(stamp: int) -> bool:
            return (
                ("gt" not in bounds or stamp > bounds["gt"])
                and ("gte" not in bounds or stamp >= bounds["gte"])
                and ("lt" not in bounds or stamp < bounds["lt"])
                and ("lte" not in bounds or stamp <= bounds["lte"])
            )

        def position(item: dict[str, Any]) -> tuple[int, int]:
            return int(item["created"]), self._order[item["id"]]

        chosen = sorted((item for item in items if within(int(item["created"]))), key=position, reverse=True)
        limit = _int_param(params, "limit", minimum=1)
        limit = LIST_LIMIT_DEFAULT if limit is None else limit
        if limit > LIST_LIMIT_MAX:
            raise invalid(f"This value must be less than or equal to {LIST_LIMIT_MAX}.", param="limit")
        after, before = params.get("starting_after"), params.get("ending_before")
        has_more = len(chosen) > limit
        page = chosen[:limit]
        if after or before:
            name, cursor_id = ("starting_after", after) if after else ("ending_before", before)
            cursor = self._find_any(str(cursor_id))
            if cursor is None:
                raise invalid(f"No such object: '{cursor_id}'", param=name, code="resource_missing")
            mark = position(cursor)
            if after:
                older = [item for item in chosen if position(item) < mark]
                has_more, page = len(older) > limit, older[:limit]
            else:
                newer = [item for item in chosen if position(item) > mark]
                has_more, page = len(newer) > limit, newer[-limit:]
        return {"object": "list", "url": url, "has_more": has_more, "data": copy.deepcopy(page)}

    def _find_any(self, object_id: str) -> dict[str, Any] | None:
        for store in self.objects.values():
            if object_id in store:
                return store[object_id]
        return next((event for event in self.events if event["id"] == object_id), None)

    def list_checkout_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(self.objects.get("checkout.session", {}).values())
            for name in ("payment_intent", "customer", "status"):
                if params.get(name):
                    items = [item for item in items if item.get(name) == params[name]]
            return self._expanded(self._page(items, params, "/v1/checkout/sessions"), params)

    def list_events(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            types = params.get("types")
            wanted = list(types) if isinstance(types, list) else []
            if isinstance(params.get("type"), str):
                wanted.append(params["type"])

            def matches(event_type: str) -> bool:
                return not wanted or any(
                    event_type == name or (name.endswith("*") and event_type.startswith(name[:-1])) for name in wanted
                )

            return self._page([e for e in self.events if matches(e["type"])], params, "/v1/events")

    def list_balance_transactions(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(self.objects.get("balance_transaction", {}).values())
            if params.get("type"):
                items = [item for item in items if item["type"] == params["type"]]
            return self._expanded(self._page(items, params, "/v1/balance_transactions"), params)

    # --- customers -----------------------------------------------------------------------------------------------

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            customer = shape("customer") | {
                "id": self._new_id("cus"),
                "created": self.now(),
                "metadata": _metadata(params),
                "email": params.get("email") or None,
                "name": params.get("name") or None,
                "description": params.get("description") or None,
                "discount": None,
                "invoice_prefix": secrets.token_hex(4).upper(),
            }
            return copy.deepcopy(self._put("customer", customer))

    # --- Checkout Sessions ----------------------------------------------------------------------------------------

    def create_checkout_session(self, params: dict[str, Any], base_url: str) -> dict[str, Any]:
        with self.lock:
            mode = params.get("mode")
            if mode is None:
                raise invalid("Missing required param: mode.", param="mode", code="parameter_missing")
            if mode != "payment":
                raise invalid("This stand-in supports Checkout in payment mode only.", param="mode")
            success_url = params.get("success_url")
            if not success_url:
                raise invalid("Missing required param: success_url.", param="success_url", code="parameter_missing")
            items = params.get("line_items")
            if not isinstance(items, list) or not items:
                raise invalid("Missing required param: line_items.", param="line_items", code="parameter_missing")
            amount_cents, currency, names = 0, None, []
            for index, item in enumerate(items):
                where = f"line_items[{index}]"
                price = item.get("price_data") if isinstance(item, dict) else None
                if not isinstance(price, dict):
                    raise invalid(
                        "Each line item needs price_data.", param=f"{where}[price_data]", code="parameter_missing"
                    )
                unit = _int_param(price, "unit_amount", minimum=0)
                if unit is None:
                    raise invalid(
                        "Missing required param: unit_amount.",
                        param=f"{where}[price_data][unit_amount]",
                        code="parameter_missing",
                    )
                quantity = _int_param(item, "quantity", minimum=1) or 1
                item_currency = str(price.get("currency") or "").lower()
                if not item_currency or (currency is not None and item_currency != currency):
                    raise invalid("All line items need the same currency.", param=f"{where}[price_data][currency]")
                currency = item_currency
                product = price.get("product_data")
                name = product.get("name") if isinstance(product, dict) else None
                if not name:
                    raise invalid(
                        "Missing required param: name.",
                        param=f"{where}[price_data][product_data][name]",
                        code="parameter_missing",
                    )
                names.append(str(name) if quantity == 1 else f"{name} x {quantity}")
                amount_cents += unit * quantity
            if amount_cents < MIN_CHARGE_CENTS:
                raise invalid("The Checkout Session's total amount due must add up to at least $0.50 usd")
            customer = params.get("customer") or None
            if customer is not None:
                self._get("customer", customer, param="customer")
            now = self.now()
            expires_at = _int_param(params, "expires_at")
            if expires_at is None:
                expires_at = now + self.session_ttl_seconds
            elif not now + SESSION_TTL_MIN_SECONDS <= expires_at <= now + SESSION_TTL_SECONDS:
                raise invalid(
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session "
                    "creation.",
                    param="expires_at",
                )
            intent_data = params.get("payment_intent_data")
            intent_data = intent_data if isinstance(intent_data, dict) else {}
            setup = intent_data.get("setup_future_usage") or None
            if setup not in (None, "off_session", "on_session"):
                raise invalid(f"Invalid setup_future_usage: {setup}", param="payment_intent_data[setup_future_usage]")
            session_id = self._new_id("cs_test")
            session = shape("checkout_session") | {
                "id": session_id,
                "object": "checkout.session",
                "created": now,
                "expires_at": expires_at,
                "mode": "payment",
                "currency": currency,
                "amount_subtotal": amount_cents,
                "amount_total": amount_cents,
                "customer": customer,
                "customer_email": params.get("customer_email") or None,
                "customer_creation": None if customer else "if_required",
                "customer_details": None,
                "collected_information": None,
                "client_reference_id": params.get("client_reference_id") or None,
                "metadata": _metadata(params),
                "payment_intent": None,
                "payment_status": "unpaid",
                "status": "open",
                "success_url": success_url,
                "cancel_url": params.get("cancel_url") or None,
                "url": f"{base_url.rstrip('/')}{CHECKOUT_PATH}{session_id}",
                "shipping_cost": None,
                "shipping_address_collection": None,
                "custom_text": {
                    "after_submit": None,
                    "shipping_address": None,
                    "submit": None,
                    "terms_of_service_acceptance": None,
                },
                "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                "currency_conversion": None,
                "invoice_creation": {"enabled": False, "invoice_data": None},
                "after_expiration": None,
                "adaptive_pricing": {"enabled": False},
                "payment_method_collection": "if_required",
                "payment_method_types": ["card"],
                "payment_method_configuration_details": None,
            }
            self._sessions[session_id] = _SessionExtra(
                product_name=", ".join(names),
                intent_metadata=_metadata(intent_data),
                setup_future_usage=setup,
                intent_description=intent_data.get("description") or None,
            )
            return copy.deepcopy(self._put("checkout.session", session))

    def expire_session(self, session_id: str) -> dict[str, Any]:
        """Expire an open session now (``POST /v1/checkout/sessions/{id}/expire``)."""
        with self.lock:
            session = self._get("checkout.session", session_id)
            if session["status"] != "open":
                raise invalid(
                    f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has '
                    f'a status of "{session["status"]}".',
                )
            self._expire(session)
            return copy.deepcopy(session)

    def _expire(self, session: dict[str, Any]) -> None:
        session["status"] = "expired"
        self._sessions[session["id"]].pending_card = None
        intent_id = session.get("payment_intent")
        if intent_id:
            intent = self._get("payment_intent", intent_id)
            if intent["status"] != "succeeded":
                intent |= {"status": "canceled", "canceled_at": self.now(), "cancellation_reason": "abandoned"}
                self._event("payment_intent.canceled", intent)
        self._event("checkout.session.expired", session)

    def expire_due(self) -> list[str]:
        """Expire every open session whose ``expires_at`` has passed; returns their ids."""
        with self.lock:
            now = self.now()
            due = [
                session
                for session in self.objects.get("checkout.session", {}).values()
                if session["status"] == "open" and session["expires_at"] <= now
            ]
            for session in due:
                self._expire(session)
            return [session["id"] for session in due]

    def checkout_view(self, session_id: str) -> CheckoutView:
        with self.lock:
            session = self._get("checkout.session", session_id)
            extra = self._sessions[session_id]
            return CheckoutView(
                id=session_id,
                status=session["status"],
                payment_status=session["payment_status"],
                amount_total_cents=session["amount_total"],
                currency=session["currency"],
                product_name=extra.product_name,
                saves_card=extra.setup_future_usage is not None,
                awaiting_authentication=extra.pending_card is not None,
                cancel_url=session["cancel_url"],
                expires_at=session["expires_at"],
            )

    def _success_url(self, session: dict[str, Any]) -> str:
        return str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])

    def pay_checkout(self, session_id: str, *, number: str, expiry: str, cvc: str) -> PayResult:
        """The customer submits a card on the checkout page."""
        with self.lock:
            session = self._get("checkout.session", session_id)
            if session["status"] != "open":
                return PayResult(PayOutcome.CLOSED, f"This checkout session is {session['status']}.")
            digits = normalise_number(number)
            if not luhn_valid(digits):
                return PayResult(PayOutcome.INVALID, "Your card number is incorrect.")
            today = datetime.fromtimestamp(self.now(), UTC)
            parsed = parse_expiry(expiry, year_now=today.year, month_now=today.month)
            if parsed is None:
                return PayResult(PayOutcome.INVALID, "Your card's expiration date is incomplete or in the past.")
            if not cvc_valid(cvc):
                return PayResult(PayOutcome.INVALID, "Your card's security code is incomplete.")
            card = TEST_CARDS.get(digits)
            # A new card replaces one still waiting for authentication.
            self._sessions[session_id].pending_card = None
            intent = self._session_intent(session)
            if card is None:
                unknown = TestCard(digits, "visa" if digits.startswith("4") else "unknown", Behaviour.DECLINED)
                message = "Your card was declined: this local stand-in accepts only test cards."
                self._decline(intent, unknown, parsed, "card_declined", "test_mode_live_card", message)
                return PayResult(PayOutcome.DECLINED, message)
            if card.behaviour is Behaviour.DECLINED:
                code = card.decline_code or "generic_decline"
                message = DECLINE_MESSAGES.get(code, DECLINE_MESSAGES["generic_decline"])
                self._decline(intent, card, parsed, "card_declined", code, message)
                return PayResult(PayOutcome.DECLINED, message)
            if card.behaviour is Behaviour.AUTHENTICATION:
                self._sessions[session_id].pending_card = (card, *parsed)
                intent |= {
                    "status": "requires_action",
                    "next_action": {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}},
                    "last_payment_error": None,
                }
                self._event("payment_intent.requires_action", intent)
                return PayResult(PayOutcome.REQUIRES_ACTION, "Your bank asks you to confirm this payment.")
            self._complete(session, intent, card, parsed)
            return PayResult(PayOutcome.PAID, redirect_url=self._success_url(session))

    def authenticate_checkout(self, session_id: str, *, approve: bool) -> PayResult:
        """The customer answers the bank's authentication (3D Secure) for the card they submitted."""
        with self.lock:
            session = self._get("checkout.session", session_id)
            extra = self._sessions[session_id]
            if session["status"] != "open":
                return PayResult(PayOutcome.CLOSED, f"This checkout session is {session['status']}.")
            if extra.pending_card is None:
                return PayResult(PayOutcome.INVALID, "There is no payment waiting for confirmation.")
            card, month, year = extra.pending_card
            extra.pending_card = None
            intent = self._session_intent(session)
            if not approve:
                message = "We are unable to authenticate your payment method. Please choose another one."
                self._decline(intent, card, (month, year), "payment_intent_authentication_failure", None, message)
                return PayResult(PayOutcome.DECLINED, message)
            self._complete(session, intent, card, (month, year))
            return PayResult(PayOutcome.PAID, redirect_url=self._success_url(session))

    def _session_intent(self, session: dict[str, Any]) -> dict[str, Any]:
        """The session's PaymentIntent, made at the first attempt to pay (as Checkout does)."""
        if session["payment_intent"]:
            return self._get("payment_intent", session["payment_intent"])
        extra = self._sessions[session["id"]]
        intent = self._new_intent(
            amount=session["amount_total"],
            currency=session["currency"],
            customer=session["customer"],
            metadata=extra.intent_metadata,
            description=extra.intent_description,
            setup_future_usage=extra.setup_future_usage,
        )
        session["payment_intent"] = intent["id"]
        return intent

    def _complete(
        self, session: dict[str, Any], intent: dict[str, Any], card: TestCard, expiry: tuple[int, int]
    ) -> None:
        extra = self._sessions[session["id"]]
        saves = extra.setup_future_usage is not None and session["customer"] is not None
        method = self._new_payment_method(card, expiry, customer=session["customer"] if saves else None)
        self._succeed(intent, method, card)
        if saves:
            self._event("payment_method.attached", method)
        session |= {
            "status": "complete",
            "payment_status": "paid",
            "customer_details": {
                "address": None,
                "business_name": None,
                "email": session["customer_email"],
                "individual_name": None,
                "name": None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            },
        }
        self._event("checkout.session.completed", session)

    # --- PaymentIntents, payment methods and charges -----------------------------------------------------------

    def _new_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer: str | None,
        metadata: dict[str, str],
        description: str | None,
        setup_future_usage: str | None,
    ) -> dict[str, Any]:
        intent_id = self._new_id("pi")
        intent = shape("payment_intent") | {
            "id": intent_id,
            "amount": amount,
            "amount_received": 0,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "client_secret": f"{intent_id}_secret_{secrets.token_urlsafe(18)}",
            "created": self.now(),
            "currency": currency,
            "customer": customer,
            "description": description,
            "last_payment_error": None,
            "latest_charge": None,
            "metadata": metadata,
            "next_action": None,
            "payment_method": None,
            "payment_method_configuration_details": None,
            "setup_future_usage": setup_future_usage,
            "status": "requires_payment_method",
            "transfer_data": None,
        }
        self._put("payment_intent", intent)
        self._event("payment_intent.created", intent)
        return intent

    def _new_payment_method(self, card: TestCard, expiry: tuple[int, int], *, customer: str | None) -> dict[str, Any]:
        method = shape("payment_method")
        method |= {
            "id": self._new_id("pm"),
            "created": self.now(),
            "customer": customer,
            "metadata": {},
            "allow_redisplay": "always" if customer else "unspecified",
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": None,
                "name": None,
                "phone": None,
                "tax_id": None,
            },
        }
        method["card"] = method["card"] | {
            "brand": card.brand,
            "display_brand": card.brand,
            "last4": card.last4,
            "exp_month": expiry[0],
            "exp_year": expiry[1],
            "fingerprint": hashlib.sha256(card.number.encode()).hexdigest()[:16],
            "networks": {"available": [card.brand], "preferred": None},
            "wallet": None,
            "generated_from": None,
        }
        self._cards[method["id"]] = card
        return self._put("payment_method", method)

    def _new_charge(
        self, intent: dict[str, Any], method: dict[str, Any], card: TestCard, *, failure: dict[str, Any] | None
    ) -> dict[str, Any]:
        charge = shape("charge")
        charge_id = self._new_id("ch")
        amount = intent["amount"]
        charge |= {
            "id": charge_id,
            "amount": amount,
            "amount_captured": amount if failure is None else 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "billing_details": method["billing_details"],
            "captured": failure is None,
            "created": self.now(),
            "currency": intent["currency"],
            "customer": intent["customer"],
            "description": intent["description"],
            "failure_code": failure["code"] if failure else None,
            "failure_message": failure["message"] if failure else None,
            "metadata": dict(intent["metadata"]),
            "outcome": {
                "advice_code": None,
                "network_advice_code": None,
                "network_decline_code": None,
                "network_status": "approved_by_network" if failure is None else "declined_by_network",
                "reason": failure.get("decline_code") if failure else None,
                "risk_level": "normal",
                "risk_score": 20,
                "seller_message": "Payment complete."
                if failure is None
                else "The bank did not return any further details with this decline.",
                "type": "authorized" if failure is None else "issuer_declined",
            },
            "paid": failure is None,
            "payment_intent": intent["id"],
            "payment_method": method["id"],
            "receipt_url": None,
            "refunds": {"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{charge_id}/refunds"},
            "source": None,
            "status": "succeeded" if failure is None else "failed",
            "transfer_data": None,
        }
        details = copy.deepcopy(charge["payment_method_details"])
        details["card"] |= {
            "brand": card.brand,
            "network": card.brand,
            "last4": card.last4,
            "exp_month": method["card"]["exp_month"],
            "exp_year": method["card"]["exp_year"],
            "fingerprint": method["card"]["fingerprint"],
            "amount_authorized": amount if failure is None else None,
            "wallet": None,
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
        }
        charge["payment_method_details"] = details
        if failure is None:
            charge["balance_transaction"] = self._balance_transaction(charge)["id"]
        return self._put("charge", charge)

    def _balance_transaction(self, charge: dict[str, Any]) -> dict[str, Any]:
        fee = card_fee_cents(charge["amount"])
        transaction = shape("balance_transaction") | {
            "id": self._new_id("txn"),
            "amount": charge["amount"],
            "available_on": charge["created"] + AVAILABLE_AFTER_SECONDS,
            "created": charge["created"],
            "currency": charge["currency"],
            "description": charge["description"],
            "fee": fee,
            "fee_details": [
                {
                    "amount": fee,
                    "application": None,
                    "currency": charge["currency"],
                    "description": "Stripe processing fees",
                    "type": "stripe_fee",
                }
            ],
            "net": charge["amount"] - fee,
            "reporting_category": "charge",
            "source": charge["id"],
            "status": "pending",
            "type": "charge",
        }
        return self._put("balance_transaction", transaction)

    def _succeed(self, intent: dict[str, Any], method: dict[str, Any], card: TestCard) -> None:
        charge = self._new_charge(intent, method, card, failure=None)
        intent |= {
            "status": "succeeded",
            "amount_received": intent["amount"],
            "payment_method": method["id"],
            "latest_charge": charge["id"],
            "last_payment_error": None,
            "next_action": None,
        }
        self._event("charge.succeeded", charge)
        self._event("payment_intent.succeeded", intent)

    def _decline(
        self,
        intent: dict[str, Any],
        card: TestCard,
        expiry: tuple[int, int],
        code: str,
        decline_code: str | None,
        message: str,
    ) -> dict[str, Any]:
        """A failed attempt on ``intent``: a failed charge and the error on the intent, which asks for another
        payment method. Returns the error as Stripe puts it on the intent."""
        method = self._new_payment_method(card, expiry, customer=None)
        error = {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "payment_method": copy.deepcopy(method),
        }
        charge = self._new_charge(intent, method, card, failure=error)
        error["charge"] = charge["id"]
        intent |= {
            "status": "requires_payment_method",
            "payment_method": None,
            "latest_charge": charge["id"],
            "last_payment_error": error,
            "next_action": None,
        }
        self._event("charge.failed", charge)
        self._event("payment_intent.payment_failed", intent)
        return error

    def create_payment_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        """A PaymentIntent; confirmed at once with ``confirm=true`` (as auto-recharge does, off-session, with a
        saved card). A declined confirmation is Stripe's 402 card error carrying the PaymentIntent."""
        with self.lock:
            amount = _int_param(params, "amount", minimum=MIN_CHARGE_CENTS)
            if amount is None:
                raise invalid("Missing required param: amount.", param="amount", code="parameter_missing")
            currency = str(params.get("currency") or "").lower()
            if not currency:
                raise invalid("Missing required param: currency.", param="currency", code="parameter_missing")
            customer = params.get("customer") or None
            if customer is not None:
                self._get("customer", customer, param="customer")
            method_id = params.get("payment_method") or None
            method: dict[str, Any] | None = None
            if method_id is not None:
                method = self._payment_method(method_id)
                owner = method.get("customer")
                if owner is not None and owner != customer:
                    raise invalid(
                        f"The provided PaymentMethod {method_id} belongs to another customer.",
                        param="payment_method",
                    )
            off_session = _bool_param(params, "off_session") or params.get("off_session") in ("one_off", "recurring")
            confirm = _bool_param(params, "confirm")
            intent = self._new_intent(
                amount=amount,
                currency=currency,
                customer=customer,
                metadata=_metadata(params),
                description=params.get("description") or None,
                setup_future_usage=params.get("setup_future_usage") or None,
            )
            if method is not None:
                intent |= {"payment_method": method["id"], "status": "requires_confirmation"}
            if not confirm:
                return self._expanded(copy.deepcopy(intent), params)
            if method is None:
                raise invalid(
                    "You cannot confirm this PaymentIntent because it's missing a payment method.",
                    param="payment_method",
                    code="payment_intent_unexpected_state",
                )
            card = self._cards[method["id"]]
            expiry = (method["card"]["exp_month"], method["card"]["exp_year"])
            if card.behaviour is Behaviour.PAYS:
                self._succeed(intent, method, card)
                return self._expanded(copy.deepcopy(intent), params)
            if card.behaviour is Behaviour.AUTHENTICATION and not off_session:
                intent |= {
                    "status": "requires_action",
                    "next_action": {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}},
                }
                self._event("payment_intent.requires_action", intent)
                return self._expanded(copy.deepcopy(intent), params)
            if card.behaviour is Behaviour.AUTHENTICATION:
                code, decline_code = "authentication_required", "authentication_required"
                message = "Your card was declined. This transaction requires authentication."
            else:
                code, decline_code = "card_declined", card.decline_code or "generic_decline"
                message = DECLINE_MESSAGES.get(decline_code, DECLINE_MESSAGES["generic_decline"])
            error = self._decline(intent, card, expiry, code, decline_code, message)
            raise StripeApiError(
                402,
                "card_error",
                message,
                code=code,
                decline_code=decline_code,
                charge=error["charge"],
                payment_method=error["payment_method"],
                payment_intent=copy.deepcopy(intent),
            )

    def _payment_method(self, method_id: str) -> dict[str, Any]:
        if method_id in TEST_PAYMENT_METHODS and method_id not in self.objects.get("payment_method", {}):
            card = TEST_CARDS[TEST_PAYMENT_METHODS[method_id]]
            today = datetime.fromtimestamp(self.now(), UTC)
            made = self._new_payment_method(card, (12, today.year + 3), customer=None)
            del self.objects["payment_method"][made["id"]]
            made["id"] = method_id
            self._cards[method_id] = card
            return self._put("payment_method", made)
        return self._get("payment_method", method_id, param="payment_method")

    # --- keeping state across restarts ----------------------------------------------------------------------------

    def change_marker(self) -> tuple[int, int]:
        """Changes whenever the state does (every change records an object, an event or an idempotent answer)."""
        with self.lock:
            return len(self._order), len(self._replays)

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (a checkout waiting for authentication is not kept)."""
        with self.lock:
            return copy.deepcopy(
                {
                    "objects": self.objects,
                    "events": self.events,
                    "order": self._order,
                    "sessions": {
                        session_id: {
                            "product_name": extra.product_name,
                            "intent_metadata": extra.intent_metadata,
                            "setup_future_usage": extra.setup_future_usage,
                            "intent_description": extra.intent_description,
                        }
                        for session_id, extra in self._sessions.items()
                    },
                    "cards": {
                        method_id: {
                            "number": card.number,
                            "brand": card.brand,
                            "behaviour": card.behaviour.value,
                            "decline_code": card.decline_code,
                            "description": card.description,
                        }
                        for method_id, card in self._cards.items()
                    },
                    "replays": {
                        key: {"fingerprint": r.fingerprint, "status": r.status, "body": r.body}
                        for key, r in self._replays.items()
                    },
                }
            )

    def restore(self, data: dict[str, Any]) -> None:
        """Take up a state saved by :meth:`snapshot`."""
        with self.lock:
            self.objects = copy.deepcopy(data["objects"])
            self.events = copy.deepcopy(data["events"])
            self._order = {str(key): int(value) for key, value in data["order"].items()}
            self._seq = itertools.count(max(self._order.values(), default=-1) + 1)
            self._sessions = {session_id: _SessionExtra(**extra) for session_id, extra in data["sessions"].items()}
            self._cards = {
                method_id: TestCard(
                    card["number"],
                    card["brand"],
                    Behaviour(card["behaviour"]),
                    card["decline_code"],
                    card["description"],
                )
                for method_id, card in data["cards"].items()
            }
            self._replays = {key: _Replay(**replay) for key, replay in data["replays"].items()}
