"""The one place the Stripe client is built, and the few calls the card rail makes through it.

The client comes from settings (secret key, API base, pinned API version, timeouts, retries); tests and operators
point it anywhere by changing the API base or handing in another ``stripe.HTTPClient``. Calls go through
:class:`StripeGateway`, which speaks in plain typed values (services.card.stripe_objects) and turns Stripe's errors
into ours: a timeout is :class:`StripeTimeout`, a server error :class:`StripeUnavailable`, a refused request
:class:`StripeRejected` (a declined off-session charge is a result, not an error).

Every POST carries an idempotency key derived from our own ids, so a retried call never creates a second object.
No call here may be made inside a database transaction (the callers fetch first, then write).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import stripe

from services.card import stripe_json
from services.card.errors import StripeRejected, StripeTimeout, StripeUnavailable
from services.card.stripe_objects import CardDetails, CheckoutSessionData, PaymentIntentData
from services.core.settings import Settings

T = TypeVar("T")

LIST_PAGE_SIZE = 100
# Where Stripe says which card paid: the PaymentIntent's latest charge (``payment_method_details.card``). Objects
# that lead to one are asked for with it expanded, so the card comes in the same call.
CHARGE_OF_INTENT = "latest_charge"
CHARGE_OF_SESSION = f"payment_intent.{CHARGE_OF_INTENT}"


def build_stripe_client(settings: Settings, http_client: stripe.HTTPClient | None = None) -> stripe.StripeClient:
    """A Stripe client configured from ``settings``; ``http_client`` replaces the network (tests, proxies)."""
    client = http_client or stripe.RequestsClient(
        timeout=(settings.stripe_connect_timeout_seconds, settings.stripe_read_timeout_seconds)
    )
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        stripe_version=settings.stripe_api_version,
        base_addresses={"api": settings.stripe_api_base.rstrip("/")},
        max_network_retries=settings.stripe_max_network_retries,
        http_client=client,
    )


def _translate(call: Callable[[], T]) -> T:
    try:
        return call()
    except stripe.APIConnectionError as exc:
        raise StripeTimeout("Stripe could not be reached in time; try again", retryable=True) from exc
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        if status >= 500 or status in (409, 429) or isinstance(exc, stripe.RateLimitError):
            raise StripeUnavailable(
                "Stripe is unavailable; try again", retryable=True, stripe_status=status or None
            ) from exc
        raise StripeRejected(
            f"Stripe refused the request: {exc.user_message or exc.code or 'unknown error'}",
            retryable=False,
            stripe_status=status or None,
            stripe_code=exc.code,
        ) from exc


def _as_dict(obj: Any) -> dict[str, Any]:
    """A Stripe object as plain JSON values, decoded from the very text Stripe answered with where the SDK kept it
    (services.card.stripe_json: no digit lost, and nothing ``json`` cannot write back)."""
    if isinstance(obj, stripe.StripeObject):
        response = obj.last_response
        if response is not None and isinstance(response.body, str | bytes):
            decoded = stripe_json.loads(response.body)
            # The answer is this object's own (not, say, the list it came in).
            own = (getattr(obj, "object", None), getattr(obj, "id", None))
            if isinstance(decoded, dict) and (decoded.get("object"), decoded.get("id")) == own:
                return decoded
        return obj.to_dict(for_json=True)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"unexpected Stripe object {type(obj).__name__}")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a Stripe list: its objects as plain dicts, and whether more follow."""

    data: list[dict[str, Any]]
    has_more: bool


def _page(listed: Any) -> Page:
    """A list's page, its objects decoded from the raw answer as :func:`_as_dict` does."""
    whole = _as_dict(listed)
    data = whole.get("data")
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return Page(data, bool(whole.get("has_more")))
    return Page([_as_dict(item) for item in listed.data], bool(listed.has_more))


@dataclass(frozen=True, slots=True)
class OffSessionResult:
    """What an off-session charge did: the PaymentIntent when Stripe made one, or a decline without one."""

    intent: PaymentIntentData | None
    declined: bool
    error_code: str | None
    error_message: str | None


class StripeGateway:
    def __init__(self, client: stripe.StripeClient, settings: Settings) -> None:
        self.client = client
        self.namespace = settings.stripe_idempotency_namespace

    def idempotency_key(self, key: str) -> str:
        """Our deterministic Stripe idempotency key for ``key`` (e.g. "purchase:42")."""
        return f"{self.namespace}{key}"

    def create_customer(self, *, account_id: int, idempotency_key: str) -> str:
        params: dict[str, Any] = {"metadata": {"creditrail_account_id": str(account_id)}}
        customer = _translate(
            lambda: self.client.v1.customers.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": self.idempotency_key(idempotency_key)},
            )
        )
        return str(customer.id)

    def create_checkout_session(self, params: dict[str, Any], *, idempotency_key: str) -> CheckoutSessionData:
        created = _translate(
            lambda: self.client.v1.checkout.sessions.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": self.idempotency_key(idempotency_key)},
            )
        )
        return CheckoutSessionData.parse(_as_dict(created))

    def retrieve_checkout_session(self, session_id: str) -> CheckoutSessionData:
        """The session as Stripe has it now, with the card it was paid with (when paid)."""
        params: Any = {"expand": [CHARGE_OF_SESSION]}
        found = _translate(lambda: self.client.v1.checkout.sessions.retrieve(session_id, params))
        return CheckoutSessionData.parse(_as_dict(found))

    def retrieve_payment_intent(self, intent_id: str) -> PaymentIntentData:
        found = _translate(lambda: self.client.v1.payment_intents.retrieve(intent_id))
        return PaymentIntentData.parse(_as_dict(found))

    def card_of_payment_intent(self, intent_id: str) -> CardDetails | None:
        """The card that paid a PaymentIntent: the PaymentIntent with its latest charge expanded, in one call. Read
        from the answer's JSON without building the SDK's objects for it (fulfilment makes this call for every
        purchase, and the objects would cost more CPU than the rest of the fulfilment)."""
        path = f"/v1/payment_intents/{quote(intent_id, safe='')}"
        answer = _translate(lambda: self.client.raw_request("get", path, expand=[CHARGE_OF_INTENT]))
        return CardDetails.of_payment_intent(answer.data)

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        return _as_dict(_translate(lambda: self.client.v1.charges.retrieve(charge_id)))

    def list_checkout_sessions(
        self,
        *,
        created_gte: int,
        created_lt: int | None = None,
        starting_after: str | None = None,
        with_card: bool = False,
    ) -> Page:
        """Checkout Sessions created at or after ``created_gte`` (and before ``created_lt``), newest first;
        ``with_card``: each with the card that paid it (its PaymentIntent's latest charge expanded)."""
        created: dict[str, int] = {"gte": created_gte}
        if created_lt is not None:
            created["lt"] = created_lt
        params: dict[str, Any] = {"created": created, "limit": LIST_PAGE_SIZE}
        if with_card:
            params["expand"] = [f"data.{CHARGE_OF_SESSION}"]
        if starting_after:
            params["starting_after"] = starting_after
        page = _translate(lambda: self.client.v1.checkout.sessions.list(params))  # type: ignore[arg-type]
        return _page(page)

    def list_balance_transactions(
        self, *, created_gte: int, created_lt: int, starting_after: str | None = None
    ) -> Page:
        """Balance transactions created in [``created_gte``, ``created_lt``), newest first, each with its source
        (the charge, refund or dispute that moved the money) expanded in place of the source's id."""
        params: dict[str, Any] = {
            "created": {"gte": created_gte, "lt": created_lt},
            "expand": ["data.source"],
            "limit": LIST_PAGE_SIZE,
        }
        if starting_after:
            params["starting_after"] = starting_after
        page = _translate(lambda: self.client.v1.balance_transactions.list(params))  # type: ignore[arg-type]
        return _page(page)

    def list_events(self, *, created_gte: int, types: list[str], starting_after: str | None = None) -> Page:
        params: dict[str, Any] = {"created": {"gte": created_gte}, "types": types, "limit": LIST_PAGE_SIZE}
        if starting_after:
            params["starting_after"] = starting_after
        page = _translate(lambda: self.client.v1.events.list(params))  # type: ignore[arg-type]
        return _page(page)

    def charge_off_session(self, params: dict[str, Any], *, idempotency_key: str) -> OffSessionResult:
        """Create and confirm an off-session PaymentIntent (with its charge expanded: the card that paid). A decline
        or a bank asking for authentication comes back as a result (with the PaymentIntent Stripe made, when it
        made one); other failures raise."""
        params = params | {"expand": [CHARGE_OF_INTENT]}

        def create() -> tuple[Any, stripe.CardError | None]:
            try:
                options: Any = {"idempotency_key": self.idempotency_key(idempotency_key)}
                return self.client.v1.payment_intents.create(params, options), None  # type: ignore[arg-type]
            except stripe.CardError as exc:
                return None, exc

        intent, declined = _translate(create)
        if declined is None:
            return OffSessionResult(PaymentIntentData.parse(_as_dict(intent)), False, None, None)
        body = declined.json_body if isinstance(declined.json_body, Mapping) else {}
        error = body.get("error")
        error = error if isinstance(error, Mapping) else {}
        raw_intent = error.get("payment_intent")
        parsed = PaymentIntentData.parse(raw_intent) if isinstance(raw_intent, Mapping) else None
        code = error.get("decline_code") or declined.code or "card_declined"
        return OffSessionResult(parsed, True, str(code), declined.user_message)


_default_lock = threading.Lock()
_default: tuple[Settings, StripeGateway] | None = None


def default_gateway(settings: Settings) -> StripeGateway:
    """The process's gateway for ``settings`` (built once, so its HTTP client keeps its connections)."""
    global _default
    with _default_lock:
        if _default is None or _default[0] is not settings:
            _default = (settings, StripeGateway(build_stripe_client(settings), settings))
        return _default[1]
