"""What we offer a buyer over x402, and whether a payment matches it.

An offer is one payment requirement per configured chain whose token supports EIP-3009 (scheme ``exact``, network
``eip155:<chain id>``, the amount in the token's base units as a string, the token, ``payTo`` the beneficiary's own
deposit address, ``maxTimeoutSeconds``, and the token's EIP-712 ``name`` and ``version`` read from the contract once
per chain and kept). v1 clients get the same requirements under the legacy network names (``base-sepolia``, ...)
where the chain id has one.

A payment (``PAYMENT-SIGNATURE``, v2, or ``X-PAYMENT``, v1 with a legacy or CAIP-2 network) is decoded with the x402
package and matched against the requirement we would offer for this very request: chain, token, ``payTo`` and the
exact amount; its authorization's time bounds are checked against our clock. Anything else is refused with a code,
before anything is written.
"""

from __future__ import annotations

import binascii
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from x402.http.utils import decode_payment_signature_header
from x402.mechanisms.evm.types import ExactEIP3009Payload
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS
from x402.schemas import PaymentPayload, PaymentRequirements
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequirementsV1

from chain.addresses import checksum
from chain.errors import ChainResponseError
from chain.rpc import ChainRpc
from services.core.settings import ChainSettings, Settings
from services.x402.errors import MalformedPayment, PaymentRefused
from services.x402.token import ZERO_ADDRESS, authorization_used, read_string

SCHEME = "exact"
LEGACY_NETWORK_NAMES: dict[int, str] = {chain_id: name for name, chain_id in V1_NETWORK_CHAIN_IDS.items()}
_HEX_NONCE = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


def caip2(chain_id: int) -> str:
    return f"eip155:{chain_id}"


def chain_id_of_network(network: str) -> int | None:
    """The chain id a network name stands for: CAIP-2 ``eip155:<id>`` or a v1 legacy name; None for neither."""
    if network.startswith("eip155:"):
        digits = network.removeprefix("eip155:")
        return int(digits) if digits.isdigit() and len(digits) <= 18 else None
    return V1_NETWORK_CHAIN_IDS.get(network)


@dataclass(frozen=True, slots=True)
class TokenDomain:
    """A token's EIP-712 domain name and version, as the contract itself answers them."""

    name: str
    version: str


_domains: dict[tuple[int, str], TokenDomain | None] = {}
_domains_lock = threading.Lock()


def token_domain(chain: ChainSettings, rpc: ChainRpc) -> TokenDomain | None:
    """The EIP-712 domain of the chain's token, read from the contract on first use and kept; None when the token
    does not support EIP-3009 (no ``authorizationState``, ``name`` or ``version``). A node that does not answer
    raises (nothing is kept)."""
    key = (chain.chain_id, chain.usdc_address)
    with _domains_lock:
        if key in _domains:
            return _domains[key]
    try:
        authorization_used(rpc, chain.usdc_address, ZERO_ADDRESS, "0x" + "00" * 32)
        domain: TokenDomain | None = TokenDomain(
            name=read_string(rpc, chain.usdc_address, "name()"),
            version=read_string(rpc, chain.usdc_address, "version()"),
        )
    except (ChainResponseError, ValueError, binascii.Error, OverflowError):
        # A revert (no such function), or an answer that is no string: the token cannot be paid over x402.
        domain = None
    with _domains_lock:
        _domains[key] = domain
    return domain


@dataclass(frozen=True, slots=True)
class Offer:
    """One chain's requirement for one request."""

    chain: ChainSettings
    requirement: PaymentRequirements

    @property
    def legacy_network(self) -> str | None:
        return LEGACY_NETWORK_NAMES.get(self.chain.chain_id)

    def v1(self, resource: str, description: str) -> PaymentRequirementsV1 | None:
        """The requirement as v1 clients read it, under the chain's legacy name (None when it has none)."""
        if self.legacy_network is None:
            return None
        r = self.requirement
        return PaymentRequirementsV1(
            scheme=r.scheme,
            network=self.legacy_network,
            max_amount_required=r.amount,
            resource=resource,
            description=description,
            mime_type="application/json",
            pay_to=r.pay_to,
            max_timeout_seconds=r.max_timeout_seconds,
            asset=r.asset,
            extra=dict(r.extra),
        )


def build_offer(
    settings: Settings, chain: ChainSettings, domain: TokenDomain, *, pay_to: str, amount_usdc_units: int
) -> Offer:
    requirement = PaymentRequirements(
        scheme=SCHEME,
        network=caip2(chain.chain_id),
        asset=checksum(chain.usdc_address),
        amount=str(amount_usdc_units),
        pay_to=checksum(pay_to),
        max_timeout_seconds=settings.x402_max_timeout_seconds,
        extra={"name": domain.name, "version": domain.version},
    )
    return Offer(chain=chain, requirement=requirement)


@dataclass(frozen=True, slots=True)
class Authorization:
    """An EIP-3009 authorization as signed, normalised (lowercase addresses, integers)."""

    from_address: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: str


@dataclass(frozen=True, slots=True)
class ReceivedPayment:
    """A decoded payment header."""

    version: int
    scheme: str
    # The network as the payment names it, and the chain it stands for (None: no chain we know of).
    network: str
    chain_id: int | None
    # v2 only: the requirement the client says it accepted.
    accepted: PaymentRequirements | None
    authorization: Authorization
    signature: str
    payment_identifier: str | None
    # The scheme payload as sent (authorization and signature), for the facilitator.
    raw_payload: dict[str, Any]


def _uint(value: str, field: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or len(text) > 78:
        raise MalformedPayment(f"the authorization's {field} is not a whole number", field=field)
    return int(text)


def _address(value: str, field: str) -> str:
    text = str(value).strip().lower()
    if not _ADDRESS.fullmatch(text):
        raise MalformedPayment(f"the authorization's {field} is not an address", field=field)
    return text


def decode_payment(header_value: str, *, header: str) -> ReceivedPayment:
    """Decode ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` with the x402 package; a header that is not a payment payload
    of the exact scheme's shape is a 400 ``invalid_payment_header``."""
    if len(header_value) > 16_384:
        raise MalformedPayment("the payment header is too long", header=header)
    try:
        decoded = decode_payment_signature_header(header_value.strip())
    except (ValueError, binascii.Error, UnicodeDecodeError, ValidationError, json.JSONDecodeError) as exc:
        raise MalformedPayment(f"the {header} header is not an x402 payment payload", header=header) from exc
    try:
        payload = ExactEIP3009Payload.from_dict(decoded.payload)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedPayment("the payment's payload is not an EIP-3009 authorization", header=header) from exc
    auth = payload.authorization
    nonce = str(auth.nonce).strip().lower()
    if not _HEX_NONCE.fullmatch(nonce):
        raise MalformedPayment("the authorization's nonce is not 32 bytes of hex", field="nonce")
    signature = str(payload.signature or "")
    if not re.fullmatch(r"0x[0-9a-fA-F]{2,}", signature) or len(signature) > 4_096:
        raise MalformedPayment("the payment carries no signature", field="signature")
    authorization = Authorization(
        from_address=_address(auth.from_address, "from"),
        to=_address(auth.to, "to"),
        value=_uint(auth.value, "value"),
        valid_after=_uint(auth.valid_after, "validAfter"),
        valid_before=_uint(auth.valid_before, "validBefore"),
        nonce=nonce,
    )
    if isinstance(decoded, PaymentPayloadV1):
        version, scheme, network, accepted = 1, decoded.scheme, str(decoded.network), None
        identifier = None
    else:
        assert isinstance(decoded, PaymentPayload)
        version, scheme, network, accepted = 2, decoded.accepted.scheme, str(decoded.accepted.network), decoded.accepted
        identifier = _payment_identifier(decoded)
    return ReceivedPayment(
        version=version,
        scheme=scheme,
        network=network,
        chain_id=chain_id_of_network(network),
        accepted=accepted,
        authorization=authorization,
        signature=signature,
        payment_identifier=identifier,
        raw_payload=payload.to_dict(),
    )


# The x402 payment-identifier extension (its package module cannot be imported without the extensions' optional
# dependencies): ``extensions["payment-identifier"]["info"]["id"]``, 16 to 128 of [A-Za-z0-9_-].
PAYMENT_IDENTIFIER = "payment-identifier"
_PAYMENT_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")


def declare_payment_identifier() -> dict[str, Any]:
    """The offer's declaration that a payment identifier is accepted (not required)."""
    return {PAYMENT_IDENTIFIER: {"info": {"required": False}}}


def _payment_identifier(payload: PaymentPayload) -> str | None:
    """The payment identifier the client sent; one that is present but not valid is refused rather than ignored
    (the client counts on it)."""
    extension = (payload.extensions or {}).get(PAYMENT_IDENTIFIER)
    if extension is None:
        return None
    info = extension.get("info") if isinstance(extension, dict) else None
    identifier = info.get("id") if isinstance(info, dict) else None
    if identifier is None:
        return None
    if not isinstance(identifier, str) or not _PAYMENT_ID.fullmatch(identifier):
        raise MalformedPayment(
            "the payment-identifier must be 16 to 128 letters, digits, '_' or '-'", field="payment-identifier"
        )
    return identifier


def match_offer(payment: ReceivedPayment, offers: list[Offer], *, now_unix: int, settings: Settings) -> Offer:
    """The offer ``payment`` pays, or a :class:`PaymentRefused` naming the first thing that does not match."""
    if payment.scheme != SCHEME:
        raise PaymentRefused("unsupported_scheme", f"only the {SCHEME!r} scheme is accepted", scheme=payment.scheme)
    offer = next((o for o in offers if o.chain.chain_id == payment.chain_id), None)
    if offer is None:
        raise PaymentRefused(
            "wrong_chain",
            f"no payment is offered on network {payment.network[:64]!r}",
            offered=[o.requirement.network for o in offers],
        )
    ours = offer.requirement
    auth = payment.authorization
    if payment.accepted is not None and payment.accepted.asset.lower() != ours.asset.lower():
        raise PaymentRefused("wrong_token", "the payment is for another token", asset=ours.asset)
    if auth.to != ours.pay_to.lower() or (
        payment.accepted is not None and payment.accepted.pay_to.lower() != ours.pay_to.lower()
    ):
        raise PaymentRefused(
            "wrong_pay_to", "the payment is not to the beneficiary's deposit address", pay_to=ours.pay_to
        )
    if auth.value != int(ours.amount) or (payment.accepted is not None and payment.accepted.amount != ours.amount):
        raise PaymentRefused(
            "wrong_amount", f"the payment must be exactly {ours.amount} base units", amount=ours.amount
        )
    if auth.valid_before < now_unix + settings.x402_valid_before_slack_seconds:
        raise PaymentRefused(
            "authorization_expired",
            "the authorization expires too soon to be settled (validBefore)",
            valid_before=auth.valid_before,
        )
    if auth.valid_after > now_unix + settings.x402_clock_skew_seconds:
        raise PaymentRefused(
            "authorization_not_yet_valid",
            "the authorization is not valid yet (validAfter)",
            valid_after=auth.valid_after,
        )
    return offer


def to_facilitator_payload(payment: ReceivedPayment, offer: Offer) -> PaymentPayload:
    """The payment as a v2 payload for the facilitator (a v1 payment is carried over: same authorization and
    signature, our requirement as the accepted one)."""
    return PaymentPayload(x402_version=2, payload=payment.raw_payload, accepted=offer.requirement)
