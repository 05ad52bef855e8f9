"""The webhooks' worker job, ``events.deliver``: claim due deliveries, send them, record each attempt.

As the mail outbox does it (services.outbox.tasks): a short transaction claims a batch (each delivery's
``next_attempt_at`` moved a lease ahead, its attempt counted); the HTTP requests happen with no transaction open and
no row locked; the results are recorded, each with its line in the delivery log (``webhook_attempts``), as they
come, a few at a time, in transactions of their own. A sender killed between sending and recording leaves the
delivery pending: once its lease passes it is sent again, with the same body and ``Creditrail-Event-Id``, so the
platform can tell. So claims and records commit without waiting for the disk (``commit_without_waiting_for_disk``):
one lost in a crash only means a delivery is sent again.

A batch is sent concurrently: each endpoint's deliveries are shared among at most
``webhook_max_in_flight_per_endpoint`` lanes, each lane sending its share one after another, and the lanes run on a
pool of ``webhook_concurrency`` threads (every endpoint's first lane is started before any second one). A dead or
slow endpoint thus holds only its own lanes: the others' deliveries go out, and are recorded, meanwhile. Once one
attempt to an endpoint got no answer (refused, timed out), its deliveries left in the batch are not tried in it:
they are put back, their attempt not counted, to the time the failed one will be retried, so a dead endpoint costs
a batch one timeout per lane, and no more until its backoff has passed.

A delivery is ``delivered`` on a 2xx answer. Anything else is retried after :data:`RETRY_SCHEDULE_SECONDS` (about
three days in all, as Stripe does); the attempt after the last wait failing marks it ``failed`` with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.engine import Engine

from services.core.db import commit_without_waiting_for_disk, unit_of_work
from services.core.settings import Settings
from services.events import repository as repo
from services.events.models import DeliveryStatus
from services.events.rows import ClaimedDelivery
from services.events.sender import AttemptResult, event_body, new_client, send
from services.worker.jobs import JobSpec, StepFn

# The wait after each failed attempt (the first after attempt 1, ...): 1 min, 5 min, 30 min, 1 h, 2 h, 4 h, 8 h,
# 12 h, 24 h, 24 h, about 3 days and 3 hours in all; the attempt after the last wait is the last one.
RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (60, 300, 1_800, 3_600, 7_200, 14_400, 28_800, 43_200, 86_400, 86_400)
MAX_ATTEMPTS = len(RETRY_SCHEDULE_SECONDS) + 1


def retry_delay_seconds(attempt: int) -> int | None:
    """The wait after attempt number ``attempt`` (from 1) failed; None after the last one (failed for good)."""
    if attempt < 1 or attempt > len(RETRY_SCHEDULE_SECONDS):
        return None
    return RETRY_SCHEDULE_SECONDS[attempt - 1]


def deliver(
    engine: Engine, settings: Settings, now: datetime, batch_size: int, *, client: httpx.Client | None = None
) -> int:
    """Claim up to ``batch_size`` due deliveries, send them, record each result; returns how many were claimed."""
    lease_until = now + timedelta(seconds=settings.webhook_lease_seconds)
    with unit_of_work(engine) as session:
        commit_without_waiting_for_disk(session)
        claimed = repo.claim(session, repo.due_ids(session, now, batch_size), now, lease_until)
    if not claimed:
        return 0
    lanes = _lanes(claimed, settings.webhook_max_in_flight_per_endpoint)
    own_client = client is None
    http = client or new_client(settings.webhook_timeout_seconds)
    unreachable: dict[int, datetime] = {}  # endpoint id -> when its failed delivery is retried
    try:
        with ThreadPoolExecutor(max_workers=min(settings.webhook_concurrency, len(lanes))) as pool:
            futures = [pool.submit(_send_lane, engine, http, lane, now, unreachable) for lane in lanes]
            for future in futures:
                future.result()
    finally:
        if own_client:
            http.close()
    return len(claimed)


def _lanes(claimed: Sequence[ClaimedDelivery], per_endpoint: int) -> list[list[ClaimedDelivery]]:
    """The batch split into lanes: each endpoint's deliveries dealt among at most ``per_endpoint`` lanes, in id
    order; every endpoint's first lane first, then every second one, ..."""
    by_endpoint: dict[int, list[ClaimedDelivery]] = defaultdict(list)
    for row in claimed:
        by_endpoint[int(row.endpoint_id)].append(row)
    split = {
        endpoint_id: [rows[i :: min(per_endpoint, len(rows))] for i in range(min(per_endpoint, len(rows)))]
        for endpoint_id, rows in by_endpoint.items()
    }
    return [lanes[rank] for rank in range(per_endpoint) for lanes in split.values() if rank < len(lanes)]


# Results recorded per transaction: a lane records what it sent this many at a time (and at its end).
RECORD_CHUNK = 20


@dataclass(frozen=True, slots=True)
class _Done:
    row: ClaimedDelivery
    # What came of the attempt; None: not tried in this batch (put back to ``retry_at``, its attempt not counted).
    result: AttemptResult | None
    # When it is tried again; None once delivered or failed for good.
    retry_at: datetime | None


def _send_lane(
    engine: Engine,
    client: httpx.Client,
    lane: Sequence[ClaimedDelivery],
    now: datetime,
    unreachable: dict[int, datetime],
) -> None:
    done: list[_Done] = []
    try:
        for row in lane:
            endpoint_id = int(row.endpoint_id)
            put_back_to = unreachable.get(endpoint_id)
            if put_back_to is not None:
                done.append(_Done(row, None, put_back_to))
            else:
                result = _send(client, row, now)
                retry_at = _retry_at(result, int(row.attempts), now)
                if not result.answered and retry_at is not None:
                    unreachable.setdefault(endpoint_id, retry_at)
                done.append(_Done(row, result, retry_at))
            if len(done) >= RECORD_CHUNK:
                record_results(engine, done, now)
                done = []
    finally:
        if done:
            record_results(engine, done, now)


def _send(client: httpx.Client, row: ClaimedDelivery, now: datetime) -> AttemptResult:
    body = event_body(
        public_id=row.event_public_id,
        event_type=row.event_type,
        created_at=row.event_created_at,
        account_id=int(row.account_id),
        data=row.data,
    )
    return send(
        client, url=row.url, body=body, secret=row.secret, event_id=row.event_public_id, signed_at=int(now.timestamp())
    )


def _retry_at(result: AttemptResult, attempt: int, now: datetime) -> datetime | None:
    delay = None if result.delivered else retry_delay_seconds(attempt)
    return now + timedelta(seconds=delay) if delay is not None else None


def record_results(engine: Engine, done: Sequence[_Done], now: datetime) -> None:
    """Record a lane's attempts (each one's line in the log, and the delivery's new state) in one transaction."""
    with unit_of_work(engine) as session:
        commit_without_waiting_for_disk(session)
        for item in done:
            delivery_id, attempt, result = int(item.row.id), int(item.row.attempts), item.result
            if result is None:
                # Not tried: due again with the delivery that found its endpoint unreachable.
                repo.record(session, delivery_id, attempt, attempts=attempt - 1, next_attempt_at=item.retry_at)
                continue
            repo.insert_attempt(
                session,
                {
                    "delivery_id": delivery_id,
                    "attempted_at": now,
                    "status_code": result.status_code,
                    "duration_ms": result.duration_ms,
                    "error": result.error,
                    "response_excerpt": result.response_excerpt,
                },
            )
            common = {"last_status_code": result.status_code, "last_error": result.error}
            if result.delivered:
                repo.record(session, delivery_id, attempt, status=DeliveryStatus.DELIVERED, delivered_at=now, **common)
            elif item.retry_at is None:
                repo.record(session, delivery_id, attempt, status=DeliveryStatus.FAILED, **common)
            else:
                repo.record(session, delivery_id, attempt, next_attempt_at=item.retry_at, **common)


def deliver_step(settings: Settings, client: httpx.Client | None = None) -> StepFn:
    """The job's step: one HTTP client for all its runs (made at the first, as building one costs tens of ms)."""
    clients: list[httpx.Client] = [client] if client is not None else []

    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        if not clients:
            clients.append(new_client(settings.webhook_timeout_seconds))
        return deliver(engine, settings, now, batch_size, client=clients[0])

    return step


def events_job(settings: Settings) -> JobSpec:
    return JobSpec(
        name="events.deliver",
        batch=None,
        step=deliver_step(settings),
        interval_seconds=settings.webhook_interval_seconds,
        batch_size=settings.webhook_batch_size,
        description="Send due webhook deliveries to the platform's endpoints, signed, retried for about three days.",
    )
