"""The outbox's worker job, ``outbox.deliver``: claim due messages, send them, record what happened.

A message is never sent while a transaction is open: a short transaction claims a batch (each message's
``next_attempt_at`` moved a lease ahead, its attempt counted), the SMTP conversations happen with no transaction
open and no row locked, over ``outbox_concurrency`` lanes (each sending its share one message after another), and
the results are recorded as they come, a few at a time, in transactions of their own. A sender killed between
sending and recording leaves the message pending: once its lease passes it is sent again, with the same
Message-ID, so the receiver can tell it is the same message. So claims and records commit without waiting for the
disk (``commit_without_waiting_for_disk``): one lost in a crash only means the message is sent again. A message is
sent only once the server accepted it; a server away or a 4xx answer is tried again after an exponential backoff;
a 5xx answer, or the last allowed attempt failing, fails it for good with the reason.

A receipt is rendered when first claimed (services.outbox.service.render_receipts), in a transaction of its own that
waits for the disk before anything is sent: the rendering kept in the row is what every attempt sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from services.core.db import commit_without_waiting_for_disk, unit_of_work
from services.core.settings import Settings
from services.outbox import repository as repo
from services.outbox.mailer import Mailer, SendResult, SmtpMailer, build_email
from services.outbox.models import MessageStatus
from services.outbox.receipts import CardsOfPurchases
from services.outbox.rows import MessageRow
from services.outbox.service import render_receipts, unrendered
from services.worker.jobs import JobSpec, StepFn


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt: doubling from the initial delay, up to the maximum."""
    delay = settings.outbox_backoff_initial_seconds * (2 ** max(0, attempts - 1))
    return float(min(delay, settings.outbox_backoff_max_seconds))


# Results recorded per transaction: a sending lane records what it sent this many at a time (and at its end).
RECORD_CHUNK = 20


def deliver(
    engine: Engine,
    settings: Settings,
    mailer: Mailer,
    now: datetime,
    batch_size: int,
    *,
    cards_of_purchases: CardsOfPurchases | None = None,
) -> int:
    """Claim up to ``batch_size`` due messages, render the receipts among them not rendered yet, send them over
    ``outbox_concurrency`` lanes, record the results; returns how many were claimed. ``cards_of_purchases`` is how
    the card rail names the cards that paid (the top floor hands it in: services.app.jobs); without it, card
    receipts go without the card."""
    lease_until = now + timedelta(seconds=settings.outbox_lease_seconds)
    with unit_of_work(engine) as session:
        commit_without_waiting_for_disk(session)
        claimed = repo.claim(session, repo.due_ids(session, now, batch_size), now, lease_until)
    taken = len(claimed)
    if any(unrendered(row) for row in claimed):
        with unit_of_work(engine) as session:
            claimed = [
                row
                for row in render_receipts(session, claimed, settings, cards_of_purchases=cards_of_purchases)
                if row.status == MessageStatus.PENDING
            ]
    lanes = min(settings.outbox_concurrency, len(claimed))
    if lanes <= 1:
        _send_lane(engine, settings, mailer, claimed, now)
    else:
        with ThreadPoolExecutor(max_workers=lanes) as pool:
            futures = [pool.submit(_send_lane, engine, settings, mailer, claimed[i::lanes], now) for i in range(lanes)]
            for future in futures:
                future.result()
    return taken


def _send_lane(engine: Engine, settings: Settings, mailer: Mailer, rows: Sequence[MessageRow], now: datetime) -> None:
    """Send ``rows`` one after another over one SMTP connection, recording the results ``RECORD_CHUNK`` at a
    time."""
    done: list[tuple[MessageRow, SendResult]] = []
    try:
        with mailer.keep_connection():
            for row in rows:
                done.append((row, mailer.send(build_email(settings, row))))
                if len(done) >= RECORD_CHUNK:
                    record_results(engine, settings, done, now)
                    done = []
    finally:
        if done:
            record_results(engine, settings, done, now)


def record_results(
    engine: Engine, settings: Settings, done: Sequence[tuple[MessageRow, SendResult]], now: datetime
) -> None:
    """Record what came of sending each row, in one transaction."""
    with unit_of_work(engine) as session:
        commit_without_waiting_for_disk(session)
        for row, result in done:
            message_id, attempt = int(row.id), int(row.attempts)
            if result.accepted:
                repo.record(session, message_id, attempt, status=MessageStatus.SENT, sent_at=now, last_error=None)
            elif result.permanent or attempt >= settings.outbox_max_attempts:
                repo.record(session, message_id, attempt, status=MessageStatus.FAILED, last_error=result.error)
            else:
                retry_at = now + timedelta(seconds=backoff_seconds(settings, attempt))
                repo.record(session, message_id, attempt, next_attempt_at=retry_at, last_error=result.error)


def deliver_step(
    settings: Settings, mailer: Mailer | None = None, *, cards_of_purchases: CardsOfPurchases | None = None
) -> StepFn:
    def step(engine: Engine, now: datetime, batch_size: int) -> int:
        return deliver(
            engine, settings, mailer or SmtpMailer(settings), now, batch_size, cards_of_purchases=cards_of_purchases
        )

    return step


def outbox_job(settings: Settings, *, cards_of_purchases: CardsOfPurchases | None = None) -> list[JobSpec]:
    """None until an SMTP server is set: without one, messages wait in the outbox (no attempt is spent on them).
    ``cards_of_purchases`` names the cards that paid card purchases (see :func:`deliver`)."""
    if not settings.smtp_host:
        return []
    return [
        JobSpec(
            name="outbox.deliver",
            batch=None,
            step=deliver_step(settings, cards_of_purchases=cards_of_purchases),
            interval_seconds=settings.outbox_interval_seconds,
            batch_size=settings.outbox_batch_size,
            description="Send due receipts and notices over SMTP, retried with backoff; failures kept with the reason.",
        )
    ]
