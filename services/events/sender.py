"""Sending one webhook delivery over HTTP, and what came of it. Nothing here touches the database.

The body is built from the event's row alone (:func:`event_body`), so every attempt of a delivery, to any endpoint,
sends the same bytes. Each attempt is signed at its own time (``Creditrail-Signature``, services.events.signing).
The endpoint accepted the event when it answered 2xx; anything else, a redirect included, or no answer (refused,
reset, timed out) is a failure the job retries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from services.core.db import utc
from services.events.signing import SIGNATURE_HEADER, sign

EVENT_ID_HEADER = "Creditrail-Event-Id"
USER_AGENT = "creditrail-webhooks/1"
EXCERPT_CHARS = 500
ERROR_CHARS = 500


def event_body(
    *, public_id: str, event_type: str, created_at: datetime, account_id: int, data: Mapping[str, Any]
) -> bytes:
    """The JSON the platform receives for an event: ``{"id", "type", "created" (unix), "account_id", "data"}``
    (keys sorted, no spaces: the same bytes on every attempt)."""
    payload = {
        "id": public_id,
        "type": event_type,
        "created": int(utc(created_at).timestamp()),
        "account_id": account_id,
        "data": dict(data),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class AttemptResult:
    # The endpoint's HTTP status; None when no answer came.
    status_code: int | None
    duration_ms: int
    error: str | None = None
    response_excerpt: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def answered(self) -> bool:
        return self.status_code is not None


def new_client(timeout_seconds: float) -> httpx.Client:
    """The HTTP client of a delivery run (thread-safe, shared by its senders): no redirects followed, no proxy from
    the environment, ``timeout_seconds`` for connecting and for each read and write."""
    return httpx.Client(timeout=httpx.Timeout(timeout_seconds), follow_redirects=False, trust_env=False)


def send(client: httpx.Client, *, url: str, body: bytes, secret: str, event_id: str, signed_at: int) -> AttemptResult:
    """POST ``body`` to ``url`` signed with ``secret`` at ``signed_at`` (unix seconds); what came of it."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: event_id,
        SIGNATURE_HEADER: sign(body, secret, signed_at),
    }
    started = time.perf_counter()
    try:
        with client.stream("POST", url, content=body, headers=headers) as response:
            excerpt = _excerpt(response)
            status_code = response.status_code
    except httpx.HTTPError as exc:
        return AttemptResult(None, _elapsed_ms(started), error=_describe(exc))
    elapsed = _elapsed_ms(started)
    error = None if 200 <= status_code < 300 else f"the endpoint answered HTTP {status_code}"
    return AttemptResult(status_code, elapsed, error=error, response_excerpt=excerpt)


def _excerpt(response: httpx.Response) -> str | None:
    """The start of the answer's body, as text (never more than a few KiB read)."""
    read = b""
    try:
        for chunk in response.iter_bytes():
            read += chunk
            if len(read) >= EXCERPT_CHARS * 4:
                break
    except httpx.HTTPError:
        # The excerpt only illustrates the log: an answer cut short keeps what arrived, and the attempt's outcome
        # was already decided by its status code.
        pass
    text = read.decode("utf-8", "replace")[:EXCERPT_CHARS]
    return text or None


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))


def _describe(exc: httpx.HTTPError) -> str:
    kind = type(exc).__name__
    message = str(exc).strip()
    return (f"{kind}: {message}" if message else kind)[:ERROR_CHARS]
