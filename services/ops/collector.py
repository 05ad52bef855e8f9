"""Metrics read from the database at scrape time: every API replica and worker reports the same truth.

One cheap query each: the chains' cursors with their pending deposits, job health, open finance exceptions, the
card webhook inbox's backlog. A query that fails is reported by ``creditrail_metrics_source_up{source} 0`` and the
others still answer.

Queues that deliver work later share two gauges, ``creditrail_queue_backlog_items{queue}`` and
``creditrail_queue_oldest_age_seconds{queue}``: the card webhook inbox (``queue="card_webhook_inbox"``) and the
outbox of receipts and notices (``queue="outbox"``: messages pending, and the oldest one's age). Families of the same
name from several sources are merged into one before they are exposed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from services.card.models import InboxStatus, StripeWebhookEvent
from services.core.clock import utcnow
from services.core.db import table_of, utc
from services.outbox import repository as outbox_repo
from services.review.models import ExceptionStatus, FinanceException
from services.usdc.status import read_cursors
from services.worker.models import JobHealth

log = logging.getLogger("creditrail.ops")

INBOX_QUEUE = "card_webhook_inbox"
OUTBOX_QUEUE = "outbox"
_BACKLOG_STATUSES = (InboxStatus.PENDING, InboxStatus.FAILED)

job_health = table_of(JobHealth)
finance_exceptions = table_of(FinanceException)
webhook_events = table_of(StripeWebhookEvent)


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class DatabaseCollector(Collector):
    """Reads the database's gauges at each scrape (registered in the app's own registry)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration (and no query then)

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        up = GaugeMetricFamily(
            "creditrail_metrics_source_up",
            "Whether the scrape could read this source (1) or not (0).",
            labels=["source"],
        )
        sources: tuple[tuple[str, Callable[[Connection, datetime], list[Metric]]], ...] = (
            ("chains", _chains),
            ("jobs", _jobs),
            ("finance_exceptions", _exceptions),
            ("card_webhook_inbox", _inbox),
            ("outbox", _outbox),
        )
        try:
            connection = self.engine.connect()
        except Exception:
            log.warning("metrics: the database is unreachable", exc_info=True)
            for name, _ in sources:
                up.add_metric([name], 0)
            yield up
            return
        families: dict[str, Metric] = {}
        with connection:
            for name, read in sources:
                try:
                    with connection.begin():
                        found = read(connection, now)
                except Exception:
                    log.warning("metrics: reading %s failed", name, exc_info=True)
                    up.add_metric([name], 0)
                    continue
                up.add_metric([name], 1)
                for family in found:
                    if family.name in families:
                        families[family.name].samples.extend(family.samples)
                    else:
                        families[family.name] = family
        yield from families.values()
        yield up


def _chains(connection: Connection, now: datetime) -> list[Metric]:
    head = GaugeMetricFamily(
        "creditrail_chain_head_block", "The chain's head block the listener saw last.", labels=["chain_id"]
    )
    scanned = GaugeMetricFamily(
        "creditrail_chain_scanned_block", "The last block the listener scanned.", labels=["chain_id"]
    )
    lag = GaugeMetricFamily(
        "creditrail_chain_lag_blocks", "Blocks between the head seen and the last scanned.", labels=["chain_id"]
    )
    pending = GaugeMetricFamily(
        "creditrail_usdc_deposits_pending", "Deposits seen and waiting for their confirmations.", labels=["chain_id"]
    )
    error_at = GaugeMetricFamily(
        "creditrail_chain_last_error_timestamp_seconds",
        "When the listener last met a node error on the chain (unix time; absent when the last poll was clean).",
        labels=["chain_id"],
    )
    for chain_id, cursor in read_cursors(connection).items():
        label = [str(chain_id)]
        scanned.add_metric(label, cursor.scanned_block)
        pending.add_metric(label, cursor.deposits_pending)
        if cursor.head_block is not None:
            head.add_metric(label, cursor.head_block)
        if cursor.lag_blocks is not None:
            lag.add_metric(label, cursor.lag_blocks)
        if cursor.last_error_at is not None:
            error_at.add_metric(label, cursor.last_error_at.timestamp())
    return [head, scanned, lag, pending, error_at]


def _jobs(connection: Connection, now: datetime) -> list[Metric]:
    c = job_health.c
    runs = CounterMetricFamily("creditrail_job_runs", "Runs of the job recorded, by every worker.", labels=["job"])
    failures = CounterMetricFamily(
        "creditrail_job_failures", "Failed runs of the job, by every worker.", labels=["job"]
    )
    in_a_row = GaugeMetricFamily(
        "creditrail_job_consecutive_failures", "Failed runs of the job in a row.", labels=["job"]
    )
    success = GaugeMetricFamily(
        "creditrail_job_last_success_timestamp_seconds", "When the job last ran to success (unix time).", labels=["job"]
    )
    stmt = select(c.job, c.total_runs, c.total_failures, c.consecutive_failures, c.last_succeeded_at).order_by(c.job)
    for row in connection.execute(stmt):
        runs.add_metric([row.job], row.total_runs)
        failures.add_metric([row.job], row.total_failures)
        in_a_row.add_metric([row.job], row.consecutive_failures)
        if (moment := _seconds(row.last_succeeded_at)) is not None:
            success.add_metric([row.job], moment)
    return [runs, failures, in_a_row, success]


def _exceptions(connection: Connection, now: datetime) -> list[Metric]:
    c = finance_exceptions.c
    gauge = GaugeMetricFamily(
        "creditrail_finance_exceptions_open", "Finance exceptions still open, by rail.", labels=["rail"]
    )
    counts = {"card": 0, "usdc": 0}
    stmt = select(c.rail, func.count()).where(c.status == ExceptionStatus.OPEN).group_by(c.rail)
    for rail, count in connection.execute(stmt):
        counts[str(rail)] = int(count)
    for rail, count in sorted(counts.items()):
        gauge.add_metric([rail], count)
    return [gauge]


def _inbox(connection: Connection, now: datetime) -> list[Metric]:
    c = webhook_events.c
    backlog, oldest = _queue_gauges()
    dead = GaugeMetricFamily(
        "creditrail_card_webhook_events_dead", "Stripe events that failed too often and wait for an admin's retry."
    )
    stmt = (
        select(c.status, func.count(), func.min(c.received_at))
        .where(c.status.in_([*map(str, _BACKLOG_STATUSES), str(InboxStatus.DEAD)]))
        .group_by(c.status)
    )
    waiting = dead_count = 0
    first: datetime | None = None
    for status, count, earliest in connection.execute(stmt):
        if status == InboxStatus.DEAD:
            dead_count = int(count)
            continue
        waiting += int(count)
        earliest = _aware(earliest)
        first = earliest if first is None or (earliest is not None and earliest < first) else first
    backlog.add_metric([INBOX_QUEUE], waiting)
    oldest.add_metric([INBOX_QUEUE], max(0.0, (now - first).total_seconds()) if first is not None else 0.0)
    dead.add_metric([], dead_count)
    return [backlog, oldest, dead]


def _queue_gauges() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    backlog = GaugeMetricFamily(
        "creditrail_queue_backlog_items",
        "Items waiting in a delivery queue (received, not yet processed).",
        labels=["queue"],
    )
    oldest = GaugeMetricFamily(
        "creditrail_queue_oldest_age_seconds",
        "Age of the oldest item waiting in the queue (0 when it is empty): the queue's lag.",
        labels=["queue"],
    )
    return backlog, oldest


def _outbox(connection: Connection, now: datetime) -> list[Metric]:
    m = outbox_repo.messages.c
    count, earliest = connection.execute(
        select(func.count(), func.min(m.created_at)).where(m.status == "pending")
    ).one()
    backlog, oldest = _queue_gauges()
    first = _aware(earliest)
    backlog.add_metric([OUTBOX_QUEUE], int(count))
    oldest.add_metric([OUTBOX_QUEUE], max(0.0, (now - first).total_seconds()) if first is not None else 0.0)
    return [backlog, oldest]


def _aware(value: Any) -> datetime | None:
    """A timestamp read back as UTC (text on SQLite, should the column's type be lost on the way)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc(value)
