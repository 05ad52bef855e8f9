"""An offline Stripe for tests: a ``stripe.HTTPClient`` the real SDK sends its requests to.

It answers like Stripe for the calls the card rail and finance make (customers, Checkout Sessions, PaymentIntents,
charges, refunds, disputes, balance transactions, events, lists with ``created`` bounds, ``starting_after``, ``limit``
and ``expand[]`` of ids such as ``data.source`` or ``payment_intent.latest_charge``), builds its objects from
Stripe's real shapes (tests/card/fixtures), honours idempotency keys (the same key replays the first answer, errors
included), records every request (method, path, form fields, headers), and can be told to fail: a 500, a timeout
before Stripe acts, or a timeout after it acted (the answer lost on the way back), from the first matching request or
after a number of them. Helpers play Stripe's side of a payment: pay a session (with one of Stripe's test
PaymentMethods: the charge carries that card's brand and last four digits), refund, dispute (and win or lose it),
emit events, and sign a webhook body exactly as Stripe does.

Money moves as Stripe moves it: every charge, refund, dispute withdrawal and dispute reversal also makes a balance
transaction with Stripe's fee and the net (a card charge costs 2.9% + 30 cents, a refund nothing, a dispute 15.00
on the withdrawal). ``now`` pins the clock objects are created at (unset, it is the real time).
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

FIXTURES = Path(__file__).parent / "fixtures"
API_BASE = "http://stripe.test"
_NUMBER_MARK = "~exact-number~"
_LIST_ITEM = re.compile(r"^([a-z_]+)\[\d+\]$")
# Stripe's pricing for US cards, and the fee for a dispute (taken with the disputed funds).
CARD_FEE_PERCENT_TENTHS = 29
CARD_FEE_FIXED_CENTS = 30
DISPUTE_FEE_CENTS = 1_500
# A charge's funds become available two days after it, on the standard payout schedule.
AVAILABLE_AFTER_SECONDS = 2 * 86_400
# Stripe's test PaymentMethods and the card each charges: brand and last four digits.
TEST_CARDS = {
    "pm_card_visa": ("visa", "4242"),
    "pm_card_mastercard": ("mastercard", "4444"),
    "pm_card_amex": ("amex", "8431"),
}


@functools.cache
def _fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_fixture_text(name))
    return loaded


def card_fee_cents(amount_cents: int) -> int:
    """Stripe's fee on a card charge: 2.9% (rounded half up to a cent) + 30 cents."""
    return (amount_cents * CARD_FEE_PERCENT_TENTHS + 500) // 1000 + CARD_FEE_FIXED_CENTS


def to_json(obj: Any) -> str:
    """JSON as Stripe writes it; a ``Decimal`` in an object becomes a JSON number with exactly its digits (Stripe's
    numbers with a fraction, such as a balance transaction's ``exchange_rate``, can carry more than a float holds)."""

    def mark(value: Any) -> str:
        if not isinstance(value, Decimal):
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        return f"{_NUMBER_MARK}{value}{_NUMBER_MARK}"

    return re.sub(f'"{_NUMBER_MARK}([-+.0-9eE]+){_NUMBER_MARK}"', r"\1", json.dumps(obj, default=mark))


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for ``payload``."""
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp or int(time.time())))


# What the SDK expects back from a request: the body, the status and the headers.
Answer = tuple[str, int, Mapping[str, str]]


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@dataclass
class Fault:
    method: str
    path_prefix: str
    # "500", "timeout" (Stripe never saw it) or "timeout_after" (Stripe acted, the answer was lost).
    kind: str
    times: int = 1
    # Matching requests to let through before the first failure.
    after: int = 0


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as flat keys ("metadata[pack]"); a list of scalars ("types[0]", "types[1]") is a list."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        listed = _LIST_ITEM.match(key)
        if listed:
            out.setdefault(listed.group(1), []).append(value)
        else:
            out[key] = value
    return out


def _sub(params: dict[str, Any], prefix: str) -> dict[str, str]:
    return {key[len(prefix) + 1 : -1]: value for key, value in params.items() if key.startswith(prefix + "[")}


class FakeStripe(stripe.HTTPClient):
    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.balance_transactions: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        # Unix seconds that new objects are created at; None is the real clock.
        self.now: int | None = None
        self.faults: list[Fault] = []
        # What an off-session charge does: "succeed", "decline", "authentication_required", "processing".
        self.off_session = "succeed"
        # Whether a new Checkout Session has a URL to pay at (Stripe leaves it out for an embedded checkout).
        self.checkout_urls = True
        self._ids = itertools.count(1)
        self._replays: dict[tuple[str, str, str], Answer] = {}
        self._intent_metadata: dict[str, dict[str, str]] = {}
        self._intent_setup: dict[str, str] = {}

    # --- the HTTPClient interface --------------------------------------------------------------------------

    def _sleep_time_seconds(self, num_retries: int) -> float:
        return 0.0

    def request(self, method: str, url: str, headers: Any, post_data: Any = None, *, _usage: Any = None) -> Answer:
        parts = urlsplit(url)
        method = method.upper()
        body = post_data.decode() if isinstance(post_data, bytes) else (post_data or "")
        params = _nest(parse_qsl(body if method == "POST" else parts.query, keep_blank_values=True))
        recorded = Recorded(method, parts.path, params, dict(headers or {}))
        self.requests.append(recorded)
        fault = self._take_fault(method, parts.path)
        if fault == "timeout":
            raise stripe.APIConnectionError("Request timed out", should_retry=True)  # type: ignore[no-untyped-call]
        if fault == "500":
            return self._error(500, "api_error", "An unknown error occurred")
        key = recorded.idempotency_key
        replay_key = (method, parts.path, key) if key and method == "POST" else None
        if replay_key is not None and replay_key in self._replays:
            response = self._replays[replay_key]
        else:
            response = self._route(method, parts.path, params)
            if replay_key is not None and response[1] < 500:
                self._replays[replay_key] = response
        if fault == "timeout_after":
            raise stripe.APIConnectionError("Request timed out", should_retry=True)  # type: ignore[no-untyped-call]
        return response

    def close(self) -> None:
        return None

    def _take_fault(self, method: str, path: str) -> str | None:
        for fault in self.faults:
            if fault.method == method and path.startswith(fault.path_prefix) and fault.times > 0:
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                return fault.kind
        return None

    def fail(self, method: str, path_prefix: str, kind: str, times: int = 1, *, after: int = 0) -> None:
        """The next ``times`` requests matching ``method`` and ``path_prefix`` fail as ``kind``, once ``after``
        matching requests have been answered normally."""
        self.faults.append(Fault(method, path_prefix, kind, times, after))

    # --- what was sent ---------------------------------------------------------------------------------------

    def sent(self, method: str, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- routing -----------------------------------------------------------------------------------------------

    @staticmethod
    def _ok(obj: Any, status: int = 200) -> Answer:
        return to_json(obj), status, {"Request-Id": "req_fake"}

    @staticmethod
    def _error(status: int, kind: str, message: str, **extra: Any) -> Answer:
        return json.dumps({"error": {"type": kind, "message": message, **extra}}), status, {}

    def _next(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def _time(self) -> int:
        return self.now if self.now is not None else int(time.time())

    def _route(self, method: str, path: str, params: dict[str, Any]) -> Answer:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/customers":
            return self._ok(self._create_customer(params))
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._ok(self._create_session(params))
        if method == "GET" and path == "/v1/checkout/sessions":
            listed = self._list(list(self.sessions.values()), params, "/v1/checkout/sessions")
            return self._ok(self._expanded(listed, params))
        if method == "GET" and path == "/v1/events":
            types = set(params.get("types", []))
            chosen = [e for e in self.events if not types or e["type"] in types]
            return self._ok(self._list(chosen, params, "/v1/events"))
        if method == "GET" and path == "/v1/balance_transactions":
            listed = self._list(list(self.balance_transactions.values()), params, "/v1/balance_transactions")
            return self._ok(self._expanded(listed, params))
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_intent(params)
        if method == "GET" and len(parts) == 4 and parts[1:3] == ["checkout", "sessions"]:
            return self._found(self.sessions, parts[3], params)
        if method == "GET" and len(parts) == 3 and parts[1] == "payment_intents":
            return self._found(self.intents, parts[2], params)
        if method == "GET" and len(parts) == 3 and parts[1] == "charges":
            return self._found(self.charges, parts[2])
        if method == "GET" and len(parts) == 3 and parts[1] == "refunds":
            return self._found(self.refunds, parts[2])
        if method == "GET" and len(parts) == 3 and parts[1] == "disputes":
            return self._found(self.disputes, parts[2])
        if method == "GET" and len(parts) == 3 and parts[1] == "balance_transactions":
            return self._found(self.balance_transactions, parts[2])
        return self._error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})")

    def _found(self, store: dict[str, dict[str, Any]], object_id: str, params: dict[str, Any] | None = None) -> Answer:
        if object_id not in store:
            return self._error(404, "invalid_request_error", f"No such object: '{object_id}'", code="resource_missing")
        return self._ok(self._expanded(store[object_id], params or {}))

    def _expanded(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``obj`` with the ids each ``expand[]`` path names replaced by their objects (``data.`` first on
        a list), as Stripe answers."""
        obj = copy.deepcopy(obj)
        for path in params.get("expand", []):
            names = path.split(".")
            if obj.get("object") == "list" and names[0] == "data":
                for item in obj["data"]:
                    self._expand(item, names[1:])
            else:
                self._expand(obj, names)
        return obj

    def _expand(self, obj: dict[str, Any], names: list[str]) -> None:
        value = obj.get(names[0])
        if isinstance(value, str):
            for store in (self.charges, self.refunds, self.disputes, self.intents, self.customers):
                if value in store:
                    value = obj[names[0]] = copy.deepcopy(store[value])
                    break
        if isinstance(value, dict) and len(names) > 1:
            self._expand(value, names[1:])

    @staticmethod
    def _list(items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        """Newest first, within the ``created`` bounds given, from after ``starting_after``, at most ``limit``."""
        bounds = {op: int(params[f"created[{op}]"]) for op in ("gt", "gte", "lt", "lte") if f"created[{op}]" in params}

        def within(created: int) -> bool:
            return (
                created > bounds.get("gt", -1)
                and created >= bounds.get("gte", 0)
                and ("lt" not in bounds or created < bounds["lt"])
                and ("lte" not in bounds or created <= bounds["lte"])
            )

        chosen = sorted((i for i in items if within(i["created"])), key=lambda i: (i["created"], i["id"]), reverse=True)
        after = params.get("starting_after")
        if after:
            ids = [i["id"] for i in chosen]
            chosen = chosen[ids.index(after) + 1 :] if after in ids else []
        limit = int(params.get("limit", 10))
        return {"object": "list", "url": url, "data": chosen[:limit], "has_more": len(chosen) > limit}

    # --- objects -----------------------------------------------------------------------------------------------

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = fixture("customer") | {"id": self._next("cus"), "created": self._time()}
        customer["metadata"] = _sub(params, "metadata")
        customer["discount"] = None
        self.customers[customer["id"]] = customer
        return customer

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session = fixture("checkout_session")
        session_id = self._next("cs_test")
        unit = int(params["line_items[0][price_data][unit_amount]"])
        quantity = int(params.get("line_items[0][quantity]", 1))
        session |= {
            "id": session_id,
            "object": "checkout.session",
            "created": self._time(),
            "expires_at": self._time() + 86_400,
            "mode": params.get("mode"),
            "currency": params["line_items[0][price_data][currency]"],
            "amount_subtotal": unit * quantity,
            "amount_total": unit * quantity,
            "customer": params.get("customer"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": _sub(params, "metadata"),
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}" if self.checkout_urls else None,
            "shipping_cost": None,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "currency_conversion": None,
        }
        self.sessions[session_id] = session
        self._intent_metadata[session_id] = _sub(params, "payment_intent_data[metadata]")
        self._intent_setup[session_id] = params.get("payment_intent_data[setup_future_usage]", "")
        return session

    def _new_intent(
        self,
        *,
        amount: int,
        customer: str | None,
        metadata: dict[str, str],
        status: str,
        payment_method: str | None,
        setup_future_usage: str | None,
        created: int | None = None,
    ) -> dict[str, Any]:
        intent = fixture("payment_intent")
        intent_id = self._next("pi")
        created = created if created is not None else self._time()
        intent |= {
            "id": intent_id,
            "amount": amount,
            "amount_received": amount if status == "succeeded" else 0,
            "created": created,
            "canceled_at": None,
            "currency": "usd",
            "customer": customer,
            "metadata": metadata,
            "status": status,
            "payment_method": payment_method,
            "setup_future_usage": setup_future_usage,
            "last_payment_error": None,
            "next_action": None,
            "client_secret": f"{intent_id}_secret_fake",
            "transfer_data": None,
        }
        if status == "succeeded":
            charge = self._new_charge(intent_id, amount, customer, created=created, payment_method=payment_method)
            intent["latest_charge"] = charge["id"]
        self.intents[intent_id] = intent
        return intent

    def _new_charge(
        self,
        intent_id: str,
        amount: int,
        customer: str | None,
        *,
        created: int | None = None,
        payment_method: str | None = None,
    ) -> dict[str, Any]:
        charge = fixture("charge")
        created = created if created is not None else self._time()
        brand, last4 = TEST_CARDS.get(payment_method or "", TEST_CARDS["pm_card_visa"])
        card = charge["payment_method_details"]["card"] | {"brand": brand, "network": brand, "last4": last4}
        charge["payment_method_details"] = charge["payment_method_details"] | {"card": card}
        charge |= {
            "id": self._next("ch"),
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "captured": True,
            "created": created,
            "customer": customer,
            "payment_intent": intent_id,
            "refunded": False,
            "metadata": {},
            "source": None,
        }
        charge["refunds"] = {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{charge['id']}/refunds",
        }
        fee = card_fee_cents(amount)
        charge["balance_transaction"] = self._balance_transaction(
            charge["id"],
            kind="charge",
            category="charge",
            amount=amount,
            fee=fee,
            fee_description="Stripe processing fees",
            created=created,
            status="pending",
        )["id"]
        self.charges[charge["id"]] = charge
        return charge

    def _balance_transaction(
        self,
        source_id: str,
        *,
        kind: str,
        category: str,
        amount: int,
        fee: int,
        fee_description: str,
        created: int,
        status: str = "available",
    ) -> dict[str, Any]:
        """The balance transaction Stripe records for money moved by ``source_id`` (net = amount - fee)."""
        transaction = fixture("balance_transaction")
        transaction |= {
            "id": self._next("txn"),
            "amount": amount,
            "fee": fee,
            "net": amount - fee,
            "fee_details": (
                [
                    {
                        "amount": fee,
                        "application": None,
                        "currency": "usd",
                        "description": fee_description,
                        "type": "stripe_fee",
                    }
                ]
                if fee
                else []
            ),
            "currency": "usd",
            "created": created,
            "available_on": created + AVAILABLE_AFTER_SECONDS,
            "description": None,
            "exchange_rate": None,
            "reporting_category": category,
            "source": source_id,
            "status": status,
            "type": kind,
        }
        self.balance_transactions[transaction["id"]] = transaction
        return transaction

    def _create_intent(self, params: dict[str, Any]) -> Answer:
        amount = int(params["amount"])
        metadata = _sub(params, "metadata")
        behaviour = self.off_session
        if behaviour in ("succeed", "processing"):
            status = "succeeded" if behaviour == "succeed" else "processing"
            intent = self._new_intent(
                amount=amount,
                customer=params.get("customer"),
                metadata=metadata,
                status=status,
                payment_method=params.get("payment_method"),
                setup_future_usage=None,
            )
            return self._ok(self._expanded(intent, params))
        intent = self._new_intent(
            amount=amount,
            customer=params.get("customer"),
            metadata=metadata,
            status="requires_payment_method",
            payment_method=None,
            setup_future_usage=None,
        )
        if behaviour == "decline":
            code, decline, message = "card_declined", "insufficient_funds", "Your card has insufficient funds."
        else:
            code, decline, message = "authentication_required", None, "This payment requires authentication."
        intent["last_payment_error"] = {"type": "card_error", "code": code, "decline_code": decline, "message": message}
        return self._error(
            402,
            "card_error",
            message,
            code=code,
            decline_code=decline,
            payment_intent=intent,
        )

    # --- Stripe's side of a payment ----------------------------------------------------------------------------

    def pay(
        self,
        session_id: str,
        *,
        amount_total: int | None = None,
        payment_status: str = "paid",
        payment_method: str = "pm_card_visa",
    ) -> dict[str, Any]:
        """The customer pays at Checkout: the session completes, with a PaymentIntent and a charge."""
        session = self.sessions[session_id]
        amount = amount_total if amount_total is not None else session["amount_total"]
        setup = self._intent_setup.get(session_id) or None
        intent = self._new_intent(
            amount=amount,
            customer=session["customer"],
            metadata=self._intent_metadata.get(session_id, {}),
            status="succeeded" if payment_status == "paid" else "processing",
            payment_method=payment_method,
            setup_future_usage=setup,
        )
        session |= {
            "status": "complete",
            "payment_status": payment_status,
            "amount_total": amount,
            "payment_intent": intent["id"],
        }
        return copy.deepcopy(session)

    def settle_async(self, session_id: str) -> dict[str, Any]:
        """A delayed payment method settles."""
        session = self.sessions[session_id]
        intent = self.intents[session["payment_intent"]]
        intent |= {"status": "succeeded", "amount_received": intent["amount"]}
        intent["latest_charge"] = self._new_charge(
            intent["id"], intent["amount"], intent["customer"], payment_method=intent["payment_method"]
        )["id"]
        session["payment_status"] = "paid"
        return copy.deepcopy(session)

    def expire(self, session_id: str) -> dict[str, Any]:
        self.sessions[session_id] |= {"status": "expired"}
        return copy.deepcopy(self.sessions[session_id])

    def charge_of(self, session_id: str) -> dict[str, Any]:
        intent = self.intents[self.sessions[session_id]["payment_intent"]]
        return self.charges[intent["latest_charge"]]

    def refund(self, charge_id: str, amount_cents: int) -> dict[str, Any]:
        """Refund part or all of a charge; returns the charge as ``charge.refunded`` carries it."""
        charge = self.charges[charge_id]
        refunded = charge["amount_refunded"] + amount_cents
        refund = fixture("refund") | {
            "id": self._next("re"),
            "amount": amount_cents,
            "charge": charge_id,
            "payment_intent": charge["payment_intent"],
            "created": self._time(),
        }
        refund["balance_transaction"] = self._balance_transaction(
            refund["id"],
            kind="refund",
            category="refund",
            amount=-amount_cents,
            fee=0,
            fee_description="",
            created=refund["created"],
        )["id"]
        self.refunds[refund["id"]] = refund
        charge |= {"amount_refunded": refunded, "refunded": refunded >= charge["amount"]}
        charge["refunds"] = {**charge["refunds"], "data": [*charge["refunds"]["data"], refund]}
        return copy.deepcopy(charge)

    def dispute(
        self,
        charge_id: str,
        *,
        amount_cents: int | None = None,
        status: str = "needs_response",
        dispute_id: str | None = None,
    ) -> dict[str, Any]:
        """The cardholder disputes a charge. Stripe withdraws the disputed amount and its dispute fee at once
        (an inquiry, status ``warning_*``, withdraws nothing)."""
        if dispute_id is not None and dispute_id in self.disputes:
            self.disputes[dispute_id]["status"] = status
            return copy.deepcopy(self.disputes[dispute_id])
        charge = self.charges[charge_id]
        dispute = fixture("dispute")
        dispute |= {
            "id": dispute_id or self._next("dp"),
            "amount": amount_cents if amount_cents is not None else charge["amount"],
            "charge": charge_id,
            "payment_intent": charge["payment_intent"],
            "status": status,
            "created": self._time(),
            "balance_transactions": [],
        }
        if not status.startswith("warning_"):
            withdrawal = self._balance_transaction(
                dispute["id"],
                kind="adjustment",
                category="dispute",
                amount=-dispute["amount"],
                fee=DISPUTE_FEE_CENTS,
                fee_description="Dispute fee",
                created=dispute["created"],
            )
            dispute["balance_transactions"] = [copy.deepcopy(withdrawal)]
            charge["disputed"] = True
        self.disputes[dispute["id"]] = dispute
        return copy.deepcopy(dispute)

    def close_dispute(self, dispute_id: str, status: str = "won", *, fee_returned_cents: int = 0) -> dict[str, Any]:
        """The dispute is decided. Won, the withdrawn funds come back (a dispute reversal; the dispute fee too,
        where ``fee_returned_cents`` says so); lost, the withdrawal stands."""
        dispute = self.disputes[dispute_id]
        dispute["status"] = status
        if status == "won" and dispute["balance_transactions"]:
            reversal = self._balance_transaction(
                dispute_id,
                kind="adjustment",
                category="dispute_reversal",
                amount=dispute["amount"],
                fee=-fee_returned_cents,
                fee_description="Dispute fee returned",
                created=self._time(),
            )
            dispute["balance_transactions"] = [*dispute["balance_transactions"], copy.deepcopy(reversal)]
        return copy.deepcopy(dispute)

    def payment_without_purchase(self, amount_cents: int, *, created: int | None = None) -> dict[str, Any]:
        """A card payment made outside this service (a PaymentIntent with no Checkout Session and no metadata of
        ours); returns its charge's balance transaction."""
        intent = self._new_intent(
            amount=amount_cents,
            customer=None,
            metadata={},
            status="succeeded",
            payment_method="pm_card_visa",
            setup_future_usage=None,
            created=created,
        )
        charge = self.charges[intent["latest_charge"]]
        return copy.deepcopy(self.balance_transactions[charge["balance_transaction"]])

    def add_balance_transactions(
        self, count: int, *, amount_cents: int = 1_000, created: int | None = None
    ) -> list[dict[str, Any]]:
        """``count`` charges (and their balance transactions) with no purchase behind them, all created at
        ``created`` (the clock by default): lists long enough to page through."""
        at = created if created is not None else self._time()
        made = []
        for _ in range(count):
            charge = self._new_charge(self._next("pi"), amount_cents, None, created=at)
            made.append(copy.deepcopy(self.balance_transactions[charge["balance_transaction"]]))
        return made

    def event(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        event_id: str | None = None,
        created: int | None = None,
        record: bool = True,
    ) -> dict[str, Any]:
        """An event as Stripe would send it (and list it at /v1/events when ``record``)."""
        event = fixture("event")
        event |= {
            "id": event_id or self._next("evt"),
            "type": event_type,
            "created": created or self._time(),
            "api_version": "2026-10-28.endive",
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
        }
        if record:
            self.events.append(event)
        return event
