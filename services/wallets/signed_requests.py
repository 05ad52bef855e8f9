"""Signed requests: a wallet authenticates one HTTP request by signing it (EIP-191 ``personal_sign``).

The request carries four headers:

- ``X-Wallet-Address``: the wallet (``0x`` and 40 hex digits, any case);
- ``X-Wallet-Timestamp``: when it was signed, in whole seconds since the Unix epoch;
- ``X-Wallet-Nonce``: 8 to 128 characters of ``A-Z a-z 0-9 - _``, never used before by this wallet;
- ``X-Wallet-Signature``: the 65-byte signature, ``0x`` and 130 hex digits.

The signed text is these seven lines joined by ``\\n`` (no newline at the end)::

    creditrail-signed-request-v1
    <METHOD, upper case>
    <path, with ?query when there is one, exactly as sent>
    <SHA-256 of the body, 64 lower-case hex digits (of the empty string when there is no body)>
    <timestamp>
    <nonce>
    <address, lower case>

A request is accepted when the signature recovers the address, its timestamp is within
``wallet_signature_window_seconds`` of our clock (either way) and its nonce was not used before by the same wallet
(a table with a unique constraint on (address, nonce), purged once a nonce's timestamp is outside the window, when
it could not be replayed anyway).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eth_account import Account
from eth_account.messages import encode_defunct

from services.core.errors import Unauthenticated
from services.wallets.addresses import normalize_wallet_address
from services.wallets.errors import InvalidWalletAddress

SIGNED_REQUEST_VERSION = "creditrail-signed-request-v1"
# The format, as the OpenAPI document tells it (the ``WalletSignature`` security scheme).
SIGNED_REQUEST_DESCRIPTION = """A request signed by an EVM wallet (EIP-191 personal_sign), instead of an API key. \
It acts for the wallet's account as a customer key does; a wallet with no account yet is refused (403 \
`wallet_unknown`) until its first purchase or sign-in.

Headers: `X-Wallet-Address` (0x + 40 hex), `X-Wallet-Timestamp` (Unix seconds), `X-Wallet-Nonce` (8-128 of \
`A-Za-z0-9-_`, never reused by the wallet), `X-Wallet-Signature` (0x + 130 hex, the 65-byte signature).

The signed text is seven lines joined by `\\n`, no newline at the end:

```
creditrail-signed-request-v1
<METHOD in upper case>
<path, with ?query if any, exactly as sent>
<SHA-256 of the body bytes, lower-case hex (of the empty string when there is no body)>
<timestamp>
<nonce>
<address in lower case>
```

Refused with 401: `malformed_wallet_headers`, `wallet_timestamp_out_of_window` (more than 300 seconds from the \
server's clock by default, either way), `invalid_wallet_signature` (also a body or query altered after signing), \
`wallet_nonce_reused`."""
ADDRESS_HEADER = "x-wallet-address"
SIGNATURE_HEADER = "x-wallet-signature"
TIMESTAMP_HEADER = "x-wallet-timestamp"
NONCE_HEADER = "x-wallet-nonce"
WALLET_HEADERS = (ADDRESS_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER)

_NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
# Up to 10 digits: any instant until the year 2286, far past every window.
_TIMESTAMP = re.compile(r"[0-9]{1,10}")


class InvalidWalletSignature(Unauthenticated):
    code = "invalid_wallet_signature"


class WalletTimestampOutOfWindow(Unauthenticated):
    code = "wallet_timestamp_out_of_window"


class MalformedWalletHeaders(Unauthenticated):
    code = "malformed_wallet_headers"


@dataclass(frozen=True, slots=True)
class WalletHeaders:
    """A request's wallet headers, checked for form (not yet for what they prove)."""

    address: str
    signature: str
    timestamp: int
    nonce: str

    @property
    def signed_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, tz=UTC)


def is_wallet_signed(headers: Mapping[str, str]) -> bool:
    """Whether a request (its headers, names lowercased) means to be signed by a wallet."""
    return any(name in headers for name in WALLET_HEADERS)


def read_wallet_headers(headers: Mapping[str, str]) -> WalletHeaders:
    """The four headers, each of its form; anything missing or misshapen: 401 ``malformed_wallet_headers``."""
    missing = [name for name in WALLET_HEADERS if not headers.get(name)]
    if missing:
        raise MalformedWalletHeaders(
            "a signed request carries X-Wallet-Address, X-Wallet-Signature, X-Wallet-Timestamp and X-Wallet-Nonce",
            missing=sorted(missing),
        )
    try:
        address = normalize_wallet_address(headers[ADDRESS_HEADER])
    except InvalidWalletAddress:
        raise MalformedWalletHeaders("X-Wallet-Address is 0x followed by 40 hexadecimal digits") from None
    signature = headers[SIGNATURE_HEADER].strip()
    if not _SIGNATURE.fullmatch(signature):
        raise MalformedWalletHeaders("X-Wallet-Signature is 0x followed by 130 hexadecimal digits (65 bytes)")
    timestamp = headers[TIMESTAMP_HEADER].strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise MalformedWalletHeaders("X-Wallet-Timestamp is whole seconds since the Unix epoch")
    nonce = headers[NONCE_HEADER].strip()
    if not _NONCE.fullmatch(nonce):
        raise MalformedWalletHeaders("X-Wallet-Nonce is 8 to 128 characters of A-Z, a-z, 0-9, '-' and '_'")
    return WalletHeaders(address, signature, int(timestamp), nonce)


def check_window(found: WalletHeaders, *, now: datetime, window_seconds: int) -> None:
    """Refuse a timestamp more than ``window_seconds`` away from ``now``, in the past or the future."""
    if abs(found.signed_at - now) > timedelta(seconds=window_seconds):
        raise WalletTimestampOutOfWindow(
            f"X-Wallet-Timestamp must be within {window_seconds} seconds of the server's clock",
            server_time=int(now.timestamp()),
            window_seconds=window_seconds,
        )


def canonical_request(
    *, method: str, path_and_query: str, body: bytes, timestamp: int, nonce: str, address: str
) -> str:
    """The text a wallet signs for a request (see the module's docstring)."""
    return "\n".join(
        (
            SIGNED_REQUEST_VERSION,
            method.upper(),
            path_and_query,
            hashlib.sha256(body).hexdigest(),
            str(timestamp),
            nonce,
            address.lower(),
        )
    )


def recover_signer(text: str, signature: str) -> str | None:
    """The lowercased address that signed ``text`` with EIP-191 personal-sign, or None for a signature that
    recovers nothing."""
    try:
        recovered = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # eth-account raises several kinds for a malformed signature (bad v, s out of range)
        return None
    return str(recovered).lower()


def verify_signature(found: WalletHeaders, *, method: str, path_and_query: str, body: bytes) -> None:
    """Refuse (401 ``invalid_wallet_signature``) unless the signature over the request recovers its address."""
    text = canonical_request(
        method=method,
        path_and_query=path_and_query,
        body=body,
        timestamp=found.timestamp,
        nonce=found.nonce,
        address=found.address,
    )
    if recover_signer(text, found.signature) != found.address:
        raise InvalidWalletSignature(
            "the signature does not match the request (see the signed request's format in the API's description)"
        )
