"""The x402 rail's errors. A refused payment is a 402 (the client may pay again, differently) carrying a code;
a request we cannot sell is a 400; a payment identifier reused for another request, or a payment still being
settled when its duplicate's wait ends, is a 409."""

from __future__ import annotations

from typing import Any

from services.core.errors import Conflict, CreditrailError, InvalidRequest


class X402Off(CreditrailError):
    """No facilitator is configured (neither an external one nor the built-in relayer), or no chain offers a token
    that supports EIP-3009."""

    code = "x402_not_configured"
    status_code = 409


class CreditsNotSold(InvalidRequest):
    """Credits are sold in 500-credit steps within the card bounds."""

    code = "invalid_credits"
    status_code = 400


class BeneficiaryConflict(InvalidRequest):
    code = "invalid_beneficiary"
    status_code = 400


class PaymentRefused(CreditrailError):
    """A payment that does not match what we offer, or that fails verification or settlement: 402, with the
    reason's code (``reason``) and a fresh offer in the answer's headers. Nothing is minted."""

    code = "payment_refused"
    status_code = 402

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class MalformedPayment(InvalidRequest):
    """A payment header that is not base64 of an x402 payment payload."""

    code = "invalid_payment_header"
    status_code = 400


class PaymentIdentifierReused(Conflict):
    code = "payment_identifier_reused"


class PaymentStillSettling(Conflict):
    """The same payment is being settled by another request (or its outcome is not known yet): the answer comes
    to a retry once it is."""

    code = "payment_settling"


class ChainUnavailable(CreditrailError):
    """A chain's node did not answer while the request needed it (nothing was settled, or the payment is left
    settling and resolved from the chain later): the same request again is safe."""

    code = "chain_unavailable"
    status_code = 503
