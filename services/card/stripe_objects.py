"""The few fields of Stripe's objects the card rail reads, parsed from their JSON into plain typed values.

Parsing is tolerant: a field Stripe left out (or an older API version lacks) becomes None, and an expanded
reference (an object where an id is usual) becomes its id. Code that needs a missing field re-reads the object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.card.models import PurchaseKind

# Metadata we put on every Checkout Session and PaymentIntent we create.
PURCHASE_ID_KEY = "creditrail_purchase_id"
ACCOUNT_ID_KEY = "creditrail_account_id"
CREDITS_KEY = "amount_credits"
PACK_KEY = "pack"
# On auto-recharge's PaymentIntents: the purchase's kind (a Checkout's PaymentIntent does not mint; its session does).
KIND_KEY = "kind"


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        return _str(value.get("id"))
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items() if item is not None}


def metadata_int(metadata: Mapping[str, str], key: str) -> int | None:
    """A positive integer stored in metadata, or None when absent or not one."""
    value = metadata.get(key, "")
    return int(value) if value.isdigit() and len(value) < 19 and int(value) > 0 else None


def _expect(obj: Mapping[str, Any], kind: str) -> None:
    """Refuse an object that says it is something else (an ``object`` field naming another type)."""
    said = obj.get("object")
    if said is not None and said != kind:
        raise ValueError(f"a {said} where a {kind} was expected")


def _id_of(obj: Mapping[str, Any], kind: str, name: str) -> str:
    """The id of an object that must be a ``kind`` (``name`` in the error when it has none)."""
    _expect(obj, kind)
    object_id = _str(obj.get("id"))
    if object_id is None:
        raise ValueError(f"a {name} without an id")
    return object_id


def _currency(obj: Mapping[str, Any]) -> str | None:
    """The object's currency code, lower case as Stripe documents it (whatever case was sent)."""
    currency = _str(obj.get("currency"))
    return currency.lower() if currency else None


def from_unix(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


# Stripe's card brand codes, as a customer reads them; any other code is shown title-cased.
CARD_BRAND_NAMES = {
    "amex": "American Express",
    "cartes_bancaires": "Cartes Bancaires",
    "diners": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos Australia",
    "interac": "Interac",
    "jcb": "JCB",
    "link": "Link",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
}


def card_label(brand: str | None, last4: str | None) -> str | None:
    """How a receipt and the purchase history name a card: "Visa ending 4242"; None when the card is not known."""
    if not brand or not last4:
        return None
    name = CARD_BRAND_NAMES.get(brand) or ("Card" if brand == "unknown" else brand.replace("_", " ").title())
    return f"{name} ending {last4}"


@dataclass(frozen=True, slots=True)
class CardDetails:
    """The card a charge was paid with: Stripe's brand code and the number's last four digits."""

    brand: str
    last4: str

    @classmethod
    def of_charge(cls, charge: Any) -> CardDetails | None:
        """From a charge object's ``payment_method_details.card`` (None for an id, another method, or a card
        without both fields)."""
        if not isinstance(charge, Mapping):
            return None
        details = charge.get("payment_method_details")
        card = details.get("card") if isinstance(details, Mapping) else None
        if not isinstance(card, Mapping):
            return None
        brand, last4 = _str(card.get("brand")), _str(card.get("last4"))
        if brand is None or last4 is None or len(brand) > 32 or len(last4) != 4 or not last4.isdigit():
            return None
        return cls(brand=brand, last4=last4)

    @classmethod
    def of_payment_intent(cls, intent: Any) -> CardDetails | None:
        """From a PaymentIntent whose ``latest_charge`` is expanded (None when it is an id or absent)."""
        return cls.of_charge(intent.get("latest_charge")) if isinstance(intent, Mapping) else None

    @property
    def label(self) -> str:
        return card_label(self.brand, self.last4) or ""


@dataclass(frozen=True, slots=True)
class CheckoutSessionData:
    id: str
    status: str | None
    payment_status: str | None
    amount_total: int | None
    currency: str | None
    mode: str | None
    client_reference_id: str | None
    payment_intent: str | None
    customer: str | None
    url: str | None
    created: int | None
    # When the session stops being payable (unix seconds).
    expires_at: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # The card paid with, when the session came with ``payment_intent.latest_charge`` expanded.
    card: CardDetails | None = None

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> CheckoutSessionData:
        session_id = _id_of(obj, "checkout.session", "Checkout Session")
        return cls(
            id=session_id,
            status=_str(obj.get("status")),
            payment_status=_str(obj.get("payment_status")),
            amount_total=_int(obj.get("amount_total")),
            currency=_currency(obj),
            mode=_str(obj.get("mode")),
            client_reference_id=_str(obj.get("client_reference_id")),
            payment_intent=_str(obj.get("payment_intent")),
            customer=_str(obj.get("customer")),
            url=_str(obj.get("url")),
            created=_int(obj.get("created")),
            expires_at=_int(obj.get("expires_at")),
            metadata=_metadata(obj.get("metadata")),
            card=CardDetails.of_payment_intent(obj.get("payment_intent")),
        )

    @property
    def complete_enough(self) -> bool:
        """Whether fulfilment can decide from this object alone (else the session is read back from Stripe)."""
        needed = (self.payment_status, self.amount_total, self.status, self.currency)
        return all(value is not None for value in needed)

    @property
    def purchase_id(self) -> int | None:
        from_metadata = metadata_int(self.metadata, PURCHASE_ID_KEY)
        if from_metadata is not None:
            return from_metadata
        reference = self.client_reference_id or ""
        return int(reference) if reference.isdigit() and len(reference) < 19 else None


@dataclass(frozen=True, slots=True)
class PaymentIntentData:
    id: str
    status: str | None
    amount: int | None
    amount_received: int | None
    currency: str | None
    customer: str | None
    payment_method: str | None
    setup_future_usage: str | None
    latest_charge: str | None
    error_code: str | None
    error_message: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    # The card paid with, when ``latest_charge`` came expanded.
    card: CardDetails | None = None

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> PaymentIntentData:
        intent_id = _id_of(obj, "payment_intent", "PaymentIntent")
        error = obj.get("last_payment_error")
        error = error if isinstance(error, Mapping) else {}
        return cls(
            id=intent_id,
            status=_str(obj.get("status")),
            amount=_int(obj.get("amount")),
            amount_received=_int(obj.get("amount_received")),
            currency=_currency(obj),
            customer=_str(obj.get("customer")),
            payment_method=_str(obj.get("payment_method")),
            setup_future_usage=_str(obj.get("setup_future_usage")),
            latest_charge=_str(obj.get("latest_charge")),
            error_code=_str(error.get("decline_code")) or _str(error.get("code")),
            error_message=_str(error.get("message")),
            metadata=_metadata(obj.get("metadata")),
            card=CardDetails.of_payment_intent(obj),
        )

    @property
    def purchase_id(self) -> int | None:
        return metadata_int(self.metadata, PURCHASE_ID_KEY)

    @property
    def mints(self) -> bool:
        """Whether this PaymentIntent is one that mints when it succeeds (auto-recharge's, off-session)."""
        return self.metadata.get(KIND_KEY) == PurchaseKind.AUTO_RECHARGE


@dataclass(frozen=True, slots=True)
class ChargeData:
    id: str
    amount: int | None
    amount_refunded: int | None
    currency: str | None
    payment_intent: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    # The card it was paid with (``payment_method_details.card``), when it was a card.
    card: CardDetails | None = None

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ChargeData:
        charge_id = _id_of(obj, "charge", "charge")
        return cls(
            id=charge_id,
            amount=_int(obj.get("amount")),
            amount_refunded=_int(obj.get("amount_refunded")),
            currency=_currency(obj),
            payment_intent=_str(obj.get("payment_intent")),
            metadata=_metadata(obj.get("metadata")),
            card=CardDetails.of_charge(obj),
        )

    @property
    def purchase_id(self) -> int | None:
        return metadata_int(self.metadata, PURCHASE_ID_KEY)


@dataclass(frozen=True, slots=True)
class DisputeData:
    id: str
    charge: str
    payment_intent: str | None
    amount: int | None
    currency: str | None
    status: str | None

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> DisputeData:
        _expect(obj, "dispute")
        dispute_id, charge = _str(obj.get("id")), _str(obj.get("charge"))
        if dispute_id is None or charge is None:
            raise ValueError("a dispute without an id or a charge")
        return cls(
            id=dispute_id,
            charge=charge,
            payment_intent=_str(obj.get("payment_intent")),
            amount=_int(obj.get("amount")),
            currency=_currency(obj),
            status=_str(obj.get("status")),
        )


@dataclass(frozen=True, slots=True)
class EventData:
    """An event's envelope, and its ``data.object`` as a plain dict."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    object: dict[str, Any]

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> EventData:
        event_id = _str(obj.get("id"))
        event_type = _str(obj.get("type"))
        created = _int(obj.get("created"))
        data = obj.get("data")
        inner = data.get("object") if isinstance(data, Mapping) else None
        if event_id is None or event_type is None or created is None or not isinstance(inner, Mapping):
            raise ValueError("an event needs an id, a type, a created time and data.object")
        if obj.get("object") not in (None, "event"):
            raise ValueError("not an event")
        return cls(
            id=event_id,
            type=event_type,
            created=created,
            livemode=bool(obj.get("livemode", False)),
            api_version=_str(obj.get("api_version")),
            object=dict(inner),
        )

    @property
    def object_id(self) -> str | None:
        return _str(self.object.get("id"))


# The outcome (and the start of the error) of an event whose object cannot be read.
UNREADABLE = "unreadable_object"


def _object_parser(event_type: str) -> Callable[[Mapping[str, Any]], object] | None:
    if event_type.startswith("checkout.session."):
        return CheckoutSessionData.parse
    if event_type.startswith("payment_intent."):
        return PaymentIntentData.parse
    if event_type.startswith("charge.dispute."):
        return DisputeData.parse
    if event_type.startswith("charge."):
        return ChargeData.parse
    return None


def unreadable_reason(event: EventData) -> str | None:
    """Why the event's ``data.object`` is not the object its type promises (no id, another kind of object), or
    None when it is (or when its type is none the card rail reads)."""
    parse = _object_parser(event.type)
    if parse is None:
        return None
    try:
        parse(event.object)
    except ValueError as exc:
        return f"{event.type}: {exc}"
    return None
