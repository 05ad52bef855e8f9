"""Delivery by the worker to real HTTP receivers: signed so the endpoint's secret verifies it, the same bytes on
every attempt, retried on the schedule until a 2xx, failed for good after the last attempt with the reason, resent on
demand; a dead or hanging endpoint holds back no other endpoint's deliveries in the same batch."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from services.app.jobs import default_jobs
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.events.service import resend, update_endpoint
from services.events.signing import verify
from services.events.tasks import MAX_ATTEMPTS, RETRY_SCHEDULE_SECONDS
from services.worker.runner import run_job_once
from tests.events.conftest import Hooks, hook_settings
from tests.events.receiver import Receiver, refused_url
from tests.worker.support import wait_for


def test_a_delivery_is_signed_with_the_endpoint_secret_and_carries_the_event(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url)
    account_id = hooks.account()
    event = hooks.event(account_id, "purchase.completed:lot:7")
    now = utcnow()
    assert hooks.deliver(now) == 1
    assert hooks.deliver(now) == 0
    [request] = receiver.received
    assert request.path == "/hooks"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Creditrail-Event-Id"] == event.public_id
    assert request.headers["User-Agent"].startswith("creditrail-webhooks/")
    assert json.loads(request.body) == {
        "id": event.public_id,
        "type": "purchase.completed",
        "created": int(event.created_at.timestamp()),
        "account_id": account_id,
        "data": {"lot_id": 7, "amount_credits": 1_000},
    }
    header = request.headers["Creditrail-Signature"]
    assert header.startswith(f"t={int(now.timestamp())},v1=")
    assert verify(request.body, header, endpoint.secret, 300, now=now.timestamp())
    assert not verify(request.body, header, "whsec_someone_else", 300, now=now.timestamp())
    assert not verify(request.body.replace(b"1000", b"9000"), header, endpoint.secret, 300, now=now.timestamp())
    [delivery] = hooks.deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at == now
    [attempt] = hooks.attempts(delivery.id)
    assert (attempt.status_code, attempt.error, attempt.response_excerpt) == (200, None, "ok")
    assert attempt.attempted_at == now


def test_an_endpoint_answering_500_gets_the_event_on_a_later_run_after_the_backoff(
    hooks: Hooks, receiver: Receiver
) -> None:
    receiver.behaviour.statuses = deque([500])
    receiver.behaviour.answer = b"database is down"
    hooks.endpoint(receiver.url)
    hooks.event(hooks.account(), "purchase.completed:lot:7")
    now = utcnow()
    assert hooks.deliver(now) == 1
    [delivery] = hooks.deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.last_error == "the endpoint answered HTTP 500"
    assert delivery.next_attempt_at == now + timedelta(seconds=RETRY_SCHEDULE_SECONDS[0])
    assert hooks.deliver(now + timedelta(seconds=RETRY_SCHEDULE_SECONDS[0] - 1)) == 0
    later = now + timedelta(seconds=RETRY_SCHEDULE_SECONDS[0])
    assert hooks.deliver(later) == 1
    [delivered] = hooks.deliveries()
    assert (delivered.status, delivered.attempts, delivered.last_error) == ("delivered", 2, None)
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["Creditrail-Event-Id"] == second.headers["Creditrail-Event-Id"]
    assert second.headers["Creditrail-Signature"].startswith(f"t={int(later.timestamp())},")
    log = hooks.attempts(delivered.id)
    assert [(a.status_code, a.response_excerpt) for a in log] == [(500, "database is down"), (200, "database is down")]


def test_a_delivery_refused_through_the_whole_schedule_fails_for_good_with_the_reason(
    hooks: Hooks, receiver: Receiver
) -> None:
    receiver.behaviour.default_status = 410
    hooks.endpoint(receiver.url)
    hooks.event(hooks.account(), "purchase.completed:lot:7")
    start = moment = utcnow()
    assert hooks.deliver(moment) == 1
    for delay in RETRY_SCHEDULE_SECONDS:
        [pending] = hooks.deliveries()
        assert pending.status == "pending"
        assert hooks.deliver(moment + timedelta(seconds=delay - 1)) == 0
        moment += timedelta(seconds=delay)
        assert hooks.deliver(moment) == 1
    assert moment - start >= timedelta(days=1)
    [failed] = hooks.deliveries()
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", MAX_ATTEMPTS, 410)
    assert failed.last_error == "the endpoint answered HTTP 410"
    assert hooks.deliver(moment + timedelta(days=30)) == 0
    assert len(receiver.received) == MAX_ATTEMPTS
    assert len(hooks.attempts(failed.id)) == MAX_ATTEMPTS


def test_a_dead_and_a_hanging_endpoint_hold_back_no_delivery_to_a_good_one(
    hooks: Hooks, make_receiver: Callable[[], Receiver]
) -> None:
    hanging, good = make_receiver(), make_receiver()
    hanging.behaviour.hang = True
    settings = hook_settings(
        hooks.engine, webhook_timeout_seconds=3.0, webhook_concurrency=3, webhook_max_in_flight_per_endpoint=1
    )
    dead_endpoint = hooks.endpoint(refused_url())
    hanging_endpoint = hooks.endpoint(hanging.url)
    good_endpoint = hooks.endpoint(good.url)
    account_id = hooks.account()
    for lot in range(3):
        hooks.event(account_id, f"purchase.completed:lot:{lot}")
    now = utcnow()
    run = threading.Thread(target=hooks.deliver, args=(now, settings))
    run.start()
    try:
        # Every delivery to the good endpoint is sent and recorded while the hanging endpoint still holds its request.
        wait_for(
            lambda: all(row.status == "delivered" for row in hooks.deliveries() if row.endpoint_id == good_endpoint.id),
            timeout=20,
            what="the good endpoint's deliveries",
        )
        assert hanging.open_requests == 1
        assert len(good.received) == 3
    finally:
        run.join(60)
    assert not run.is_alive()
    rows = hooks.deliveries()
    for endpoint, error in ((dead_endpoint, "ConnectError"), (hanging_endpoint, "ReadTimeout")):
        tried, *put_back = [row for row in rows if row.endpoint_id == endpoint.id]
        assert (tried.status, tried.attempts, tried.last_status_code) == ("pending", 1, None)
        assert str(tried.last_error).startswith(error)
        retry_at = now + timedelta(seconds=RETRY_SCHEDULE_SECONDS[0])
        assert tried.next_attempt_at == retry_at
        # The rest of its batch was not tried: due again with it, no attempt spent.
        assert [(row.status, row.attempts, row.next_attempt_at) for row in put_back] == [("pending", 0, retry_at)] * 2
        assert [len(hooks.attempts(row.id)) for row in put_back] == [0, 0]
    assert len(hanging.received) == 1


def test_a_resend_sends_a_delivered_event_again_with_the_same_body(hooks: Hooks, receiver: Receiver) -> None:
    hooks.endpoint(receiver.url)
    hooks.event(hooks.account(), "purchase.completed:lot:7")
    now = utcnow()
    assert hooks.deliver(now) == 1
    [delivery] = hooks.deliveries()
    with unit_of_work(hooks.engine) as session:
        resent = resend(session, delivery.id, now + timedelta(minutes=5))
    assert (resent.status, resent.next_attempt_at) == ("pending", now + timedelta(minutes=5))
    assert hooks.deliver(now + timedelta(minutes=5)) == 1
    first, second = receiver.received
    assert first.body == second.body
    [again] = hooks.deliveries()
    assert (again.status, again.attempts) == ("delivered", 2)


def test_a_failed_delivery_resent_gets_one_more_attempt(hooks: Hooks, receiver: Receiver) -> None:
    receiver.behaviour.default_status = 500
    hooks.endpoint(receiver.url)
    hooks.event(hooks.account(), "purchase.completed:lot:7")
    moment = utcnow()
    hooks.deliver(moment)
    for delay in RETRY_SCHEDULE_SECONDS:
        moment += timedelta(seconds=delay)
        hooks.deliver(moment)
    [failed] = hooks.deliveries()
    assert failed.status == "failed"
    receiver.behaviour.default_status = 204
    with unit_of_work(hooks.engine) as session:
        resend(session, failed.id, moment)
    assert hooks.deliver(moment) == 1
    [delivered] = hooks.deliveries()
    assert (delivered.status, delivered.attempts, delivered.last_status_code) == ("delivered", MAX_ATTEMPTS + 1, 204)


def test_a_disabled_endpoint_gets_nothing_until_it_is_enabled_again(hooks: Hooks, receiver: Receiver) -> None:
    endpoint = hooks.endpoint(receiver.url)
    hooks.event(hooks.account(), "purchase.completed:lot:7")
    with unit_of_work(hooks.engine) as session:
        update_endpoint(session, hooks.settings, endpoint.public_id, {"enabled": False})
    assert hooks.deliver() == 0
    with unit_of_work(hooks.engine) as session:
        update_endpoint(session, hooks.settings, endpoint.public_id, {"enabled": True})
    assert hooks.deliver() == 1
    assert len(receiver.received) == 1


def test_the_worker_runs_the_delivery_job(hooks: Hooks, receiver: Receiver) -> None:
    [job] = [spec for spec in default_jobs(hooks.settings) if spec.name == "events.deliver"]
    assert job.step is not None
    assert (job.batch_size, job.interval_seconds) == (
        hooks.settings.webhook_batch_size,
        hooks.settings.webhook_interval_seconds,
    )
    hooks.endpoint(receiver.url)
    hooks.event(hooks.account(), "purchase.completed:lot:7")
    assert run_job_once(hooks.engine, job).items == 1
    [delivery] = hooks.deliveries()
    assert delivery.status == "delivered"
