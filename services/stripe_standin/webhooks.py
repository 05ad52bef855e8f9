"""Sending events as Stripe sends them: a POST of the event's JSON to the endpoint, signed in the
``Stripe-Signature`` header (``t=<unix seconds>,v1=<HMAC-SHA256 of "t.body">``, made by the SDK's own
``stripe.WebhookSignature``) with the endpoint's secret, and retried with exponential backoff while the endpoint
fails (a status outside 2xx, or no answer), each retry signed afresh.

One thread sends, in the order events became due. Every attempt is recorded (:attr:`WebhookSender.attempts`).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import stripe

log = logging.getLogger("creditrail.stripe_standin.webhooks")


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    event_type: str
    attempt: int
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    event: dict[str, Any] = field(compare=False)
    attempt: int = field(compare=False, default=1)


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``payload``."""
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp))


class WebhookSender:
    def __init__(
        self,
        url: str | None,
        secret: str,
        *,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        max_attempts: int = 10,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.secret = secret
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        self.attempts: list[Attempt] = []
        self._client = httpx.Client(timeout=timeout_seconds)
        self._queue: list[_Pending] = []
        self._seq = itertools.count()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def enqueue(self, event: dict[str, Any]) -> None:
        """Send ``event`` as soon as possible (nothing is sent without an endpoint URL)."""
        if not self.url:
            return
        with self._changed:
            heapq.heappush(self._queue, _Pending(time.monotonic(), next(self._seq), event))
            self._changed.notify_all()

    def backoff_seconds(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1, 2, 4, ... times the initial wait, capped)."""
        return float(min(self.backoff_initial_seconds * 2 ** min(attempt - 1, 30), self.backoff_max_seconds))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stripe-standin-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._client.close()

    def pending(self) -> int:
        with self._changed:
            return len(self._queue)

    def wait(self, predicate: Callable[[list[Attempt]], bool], timeout_seconds: float) -> bool:
        """Wait until ``predicate`` holds of the attempts made so far, or the time is up; returns whether it holds."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while not predicate(list(self.attempts)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopping and (not self._queue or self._queue[0].due > time.monotonic()):
                    wait = self._queue[0].due - time.monotonic() if self._queue else None
                    self._changed.wait(wait)
                if self._stopping:
                    return
                pending = heapq.heappop(self._queue)
            attempt = self._send(pending)
            with self._changed:
                self.attempts.append(attempt)
                if not attempt.delivered and pending.attempt < self.max_attempts:
                    pending.due = time.monotonic() + self.backoff_seconds(pending.attempt)
                    pending.attempt += 1
                    pending.seq = next(self._seq)
                    heapq.heappush(self._queue, pending)
                self._changed.notify_all()

    def _send(self, pending: _Pending) -> Attempt:
        event = pending.event
        payload = json.dumps(event, indent=2)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(payload, self.secret, int(self.clock())),
        }
        status: int | None = None
        error: str | None = None
        try:
            assert self.url is not None
            response = self._client.post(self.url, content=payload.encode("utf-8"), headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if status is None or not 200 <= status < 300:
            log.info(
                "webhook %s (%s) attempt %d failed: %s", event["id"], event["type"], pending.attempt, error or status
            )
        return Attempt(event["id"], event["type"], pending.attempt, status, error)
