"""In-process metrics (Prometheus): the ledger's operations and the card webhooks this process saw.

These counters and histograms count what happened in this process since it started; Prometheus sums them across
API replicas and workers (``sum by (kind, outcome) (rate(creditrail_ledger_operations_total[5m]))``). What lives
in the database (chain lag, deposits pending, job health, exceptions, backlogs) is read at scrape time instead, by
the collector in services.ops.collector, so every process reports the same truth.

The ledger's public operations are instrumented in one place each, by :func:`ledger_operation`: a count by kind and
outcome (``ok``, ``replay``, or the error's code) and the latency by kind. The cost on the hot path is two clock
reads, a context variable and two pre-resolved metric updates: a few microseconds against a spend's millisecond.
An operation called by another one (a grant mints) counts once, as the outer one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Histogram

from services.core.errors import CreditrailError

P = ParamSpec("P")
R = TypeVar("R")

# The kinds of ledger operation, each instrumented at its public function.
LEDGER_KINDS = (
    "mint",
    "grant",
    "credit",
    "spend",
    "debit",
    "hold",
    "capture",
    "release",
    "hold_expiry",
    "clawback",
    "reinstate",
    "expiry",
)
OUTCOME_OK = "ok"
OUTCOME_REPLAY = "replay"
# Anything raised that is not a domain error (a database failure, a bug).
OUTCOME_UNEXPECTED = "unexpected_error"

LEDGER_OPERATIONS = Counter(
    "creditrail_ledger_operations",
    "Ledger operations by kind and outcome (ok, replay, or the error code), in this process.",
    ["kind", "outcome"],
)
LEDGER_SECONDS = Histogram(
    "creditrail_ledger_operation_seconds",
    "Time a ledger operation took in this process (its database work included, not the commit).",
    ["kind"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

CARD_WEBHOOKS_RECEIVED = Counter(
    "creditrail_card_webhooks_received",
    "Verified Stripe webhook events acknowledged by this process, by whether the inbox already had them.",
    ["duplicate"],
)
CARD_WEBHOOKS_PROCESSED = Counter(
    "creditrail_card_webhooks_processed", "Stored Stripe events this process processed (applied and marked done)."
)
CARD_WEBHOOKS_FAILED = Counter(
    "creditrail_card_webhooks_failed", "Stored Stripe events whose processing failed in this process (retried later)."
)

_inside: ContextVar[bool] = ContextVar("creditrail_ledger_operation", default=False)


def ledger_operation(kind: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count and time every call of the decorated ledger operation as ``kind``."""
    if kind not in LEDGER_KINDS:
        raise ValueError(f"unknown ledger operation kind {kind!r}")
    seconds = LEDGER_SECONDS.labels(kind)
    ok = LEDGER_OPERATIONS.labels(kind, OUTCOME_OK)
    replay = LEDGER_OPERATIONS.labels(kind, OUTCOME_REPLAY)

    def decorate(operation: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(operation)
        def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            if _inside.get():
                return operation(*args, **kwargs)
            token = _inside.set(True)
            started = time.perf_counter()
            try:
                result = operation(*args, **kwargs)
            except CreditrailError as exc:
                LEDGER_OPERATIONS.labels(kind, exc.code).inc()
                raise
            except BaseException:
                LEDGER_OPERATIONS.labels(kind, OUTCOME_UNEXPECTED).inc()
                raise
            else:
                (replay if getattr(result, "replayed", False) else ok).inc()
                return result
            finally:
                seconds.observe(time.perf_counter() - started)
                _inside.reset(token)

        return counted

    return decorate


def card_webhook_received(*, duplicate: bool) -> None:
    CARD_WEBHOOKS_RECEIVED.labels("true" if duplicate else "false").inc()


def card_webhooks_processed(count: int = 1) -> None:
    if count:
        CARD_WEBHOOKS_PROCESSED.inc(count)


def card_webhook_failed() -> None:
    CARD_WEBHOOKS_FAILED.inc()
