"""Signing the platform's webhooks, and checking a signature: the scheme Stripe uses for its own.

Every delivery carries ``Creditrail-Signature: t=<unix time of the attempt>,v1=<hex HMAC-SHA256>``, the HMAC keyed
with the endpoint's secret (``whsec_...``) over ``f"{t}.{body}"``, the body being the exact bytes received. A receiver
recomputes it with its secret, compares in constant time, and refuses a timestamp further than its tolerance from
its own clock (a replayed old request). During a rotation a header may carry several ``v1`` values; any one matching
is enough. :func:`verify` is the receiving side, usable as it is by a platform written in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Creditrail-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with ``secret``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Creditrail-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},{SCHEME}={signature(body, secret, timestamp)}"


def parse_header(header: str) -> tuple[int, list[str]] | None:
    """The timestamp and the ``v1`` signatures of a header; None when it has no usable timestamp."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME and value:
            signatures.append(value)
    return None if timestamp is None else (timestamp, signatures)


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` (the raw bytes received) with ``secret``, at a time within
    ``tolerance_seconds`` of ``now`` (default: this machine's clock) either way."""
    if not header:
        return False
    parsed = parse_header(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = signature(body, secret, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
