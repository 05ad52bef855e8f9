"""The webhooks' worker job, ``events.deliver``: claim due deliveries, send them, record each attempt.

As the mail outbox does it (services.outbox.tasks): a short transaction claims a batch (each delivery's
``next_attempt_at`` moved a lease ahead, its attempt counted); the HTTP requests happen with no transaction open and
no row locked; each result is recorded, with its line in the delivery log (``webhook_attempts``), in a transaction of
its own as soon as it is known. A sender killed between sending and recording leaves the delivery pending: once its
lease passes it is sent again, with the same body and ``Creditrail-Event-Id``, so the platform can tell.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.settings import Settings
from services.events import repository as repo
from services.events.models import DeliveryStatus
from services.events.sender import AttemptResult, event_body, new_client, send

if TYPE_CHECKING:
    from services.worker.registry import JobSpec

StepFn = Callable[[Engine, datetime, int], int]

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


def _lanes(claimed: Sequence[Any], per_endpoint: int) -> list[list[Any]]:
    """The batch split into lanes: each endpoint's deliveries dealt among at most ``per_endpoint`` lanes, in id
    order; every endpoint's first lane first, then every second one, ..."""
    by_endpoint: dict[int, list[Any]] = defaultdict(list)
    for row in claimed:
        by_endpoint[int(row.endpoint_id)].append(row)
    split = {
        endpoint_id: [rows[i :: min(per_endpoint, len(rows))] for i in range(min(per_endpoint, len(rows)))]
        for endpoint_id, rows in by_endpoint.items()
    }
    return [lanes[rank] for rank in range(per_endpoint) for lanes in split.values() if rank < len(lanes)]


def _send_lane(
    engine: Engine, client: httpx.Client, lane: Sequence[Any], now: datetime, unreachable: dict[int, datetime]
) -> None:
    for row in lane:
        endpoint_id = int(row.endpoint_id)
        retry_at = unreachable.get(endpoint_id)
        if retry_at is not None:
            _put_back(engine, row, retry_at)
            continue
        body = event_body(
            public_id=row.event_public_id,
            event_type=row.event_type,
            created_at=row.event_created_at,
            account_id=int(row.account_id),
            data=row.data,
        )
        result = send(
            client,
            url=row.url,
            body=body,
            secret=row.secret,
            event_id=row.event_public_id,
            signed_at=int(now.timestamp()),
        )
        retry_at = record_result(engine, int(row.id), int(row.attempts), result, now)
        if not result.answered and retry_at is not None:
            unreachable.setdefault(endpoint_id, retry_at)


def record_result(
    engine: Engine, delivery_id: int, attempt: int, result: AttemptResult, now: datetime
) -> datetime | None:
    """Record an attempt (its line in the log, and the delivery's new state); when it is tried again, if it is."""
    delay = None if result.delivered else retry_delay_seconds(attempt)
    retry_at = now + timedelta(seconds=delay) if delay is not None else None
    with unit_of_work(engine) as session:
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
        elif retry_at is None:
            repo.record(session, delivery_id, attempt, status=DeliveryStatus.FAILED, **common)
        else:
            repo.record(session, delivery_id, attempt, next_attempt_at=retry_at, **common)
    return retry_at


def _put_back(engine: Engine, row: Any, retry_at: datetime) -> None:
    """A delivery not tried in this batch (its endpoint did not answer another one): due again at ``retry_at``,
    its attempt not counted."""
    attempt = int(row.attempts)
    with unit_of_work(engine) as session:
        repo.record(session, int(row.id), attempt, attempts=attempt - 1, next_attempt_at=retry_at)


def deliver_step(settings: Settings, client: httpx.Client | None = None) -> StepFn:
    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        return deliver(engine, settings, now, batch_size, client=client)

    return step


def events_job(settings: Settings) -> JobSpec:
    from services.worker.registry import JobSpec

    return JobSpec(
        name="events.deliver",
        batch=None,
        step=deliver_step(settings),
        interval_seconds=settings.webhook_interval_seconds,
        batch_size=settings.webhook_batch_size,
        description="Send due webhook deliveries to the platform's endpoints, signed, retried for about three days.",
    )
