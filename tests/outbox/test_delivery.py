"""Delivery by the worker over real SMTP: sent once the server accepted it, retried with backoff while the server is
away or answers 4xx, failed for good with the reason on a 5xx, resent with the same Message-ID after a crash between
sending and recording, and never holding a row lock while the SMTP conversation goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.app.jobs import default_jobs
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger.accounts import create_customer_account, update_email
from services.ledger.spending import spend
from services.outbox.mailer import SendResult, SmtpMailer
from services.outbox.tasks import deliver
from services.worker.runner import run_job_once
from tests.outbox.conftest import Mail, mail_settings
from tests.outbox.smtp_server import TestSmtpServer


def test_a_receipt_is_sent_once_with_the_message_id_chosen_when_it_was_written(mail: Mail) -> None:
    lot_id = mail.purchase(mail.account())
    [row] = mail.messages()
    assert (row.status, row.attempts, row.dedupe_key) == ("pending", 0, f"receipt:lot:{lot_id}")
    assert mail.deliver() == 1
    assert mail.deliver() == 0
    [received] = mail.smtp.received
    assert received.recipients == ["buyer@example.test"]
    assert received.message_id == row.message_id
    assert received.message.is_multipart()
    [sent] = mail.messages()
    assert (row.subject, received.message["Subject"]) == ("", sent.subject)  # rendered when first sent
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, None)
    assert sent.sent_at is not None


def test_an_account_without_an_email_gets_no_message(mail: Mail) -> None:
    mail.purchase(mail.account(email=None))
    assert mail.messages() == []


def test_a_server_away_then_back_gets_the_message_later_once(engine: Engine) -> None:
    down = TestSmtpServer()  # its port, with nothing listening yet
    mail = Mail(engine, mail_settings(engine, down.port), down)
    mail.purchase(mail.account())
    now = utcnow()
    assert mail.deliver(now) == 1
    [row] = mail.messages()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "Connection" in str(row.last_error)
    assert row.next_attempt_at >= now + timedelta(seconds=60)
    # Not due again before its backoff.
    assert mail.deliver(now + timedelta(seconds=30)) == 0
    down.start()
    try:
        assert mail.deliver(now + timedelta(seconds=61)) == 1
        assert mail.deliver(now + timedelta(days=1)) == 0
    finally:
        down.stop()
    assert len(down.received) == 1
    [sent] = mail.messages()
    assert (sent.status, sent.attempts) == ("sent", 2)
    assert down.received[0].message_id == sent.message_id


def test_a_4xx_answer_is_retried_with_growing_backoff_then_fails_after_the_last_attempt(mail: Mail) -> None:
    mail.smtp.behaviour.data_reply = "451 4.3.0 Try again later"
    mail.purchase(mail.account())
    now = utcnow()
    waits = []
    for _ in range(2):
        assert mail.deliver(now) == 1
        [row] = mail.messages()
        assert row.status == "pending"
        assert row.last_error.startswith("451")
        waits.append(row.next_attempt_at - now)
        now = row.next_attempt_at
    assert waits == [timedelta(seconds=60), timedelta(seconds=120)]
    assert mail.deliver(now) == 1  # the third and last attempt allowed
    [row] = mail.messages()
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error.startswith("451")
    assert mail.smtp.received == []


def test_a_permanently_refused_address_is_failed_at_once_with_the_reason(mail: Mail) -> None:
    mail.smtp.behaviour.refuse_recipients["gone@example.test"] = "550 5.1.1 No such user here"
    mail.purchase(mail.account(email="gone@example.test"))
    assert mail.deliver() == 1
    [row] = mail.messages()
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "550 5.1.1 No such user here"
    assert mail.deliver(utcnow() + timedelta(days=30)) == 0


class _KilledAfterSending(BaseException):
    """Stands for the process dying right after the server accepted the message, before the result is recorded."""


class _DiesAfterSending(SmtpMailer):
    def send(self, message: EmailMessage) -> SendResult:
        result = super().send(message)
        assert result.accepted
        raise _KilledAfterSending


def test_a_sender_killed_between_sending_and_recording_resends_with_the_same_message_id(mail: Mail) -> None:
    mail.purchase(mail.account())
    now = utcnow()
    with pytest.raises(_KilledAfterSending):
        deliver(mail.engine, mail.settings, _DiesAfterSending(mail.settings), now, 10)
    [row] = mail.messages()
    assert (row.status, row.attempts) == ("pending", 1)
    # Leased to the dead sender: nobody takes it before the lease ends, then it is sent again.
    assert mail.deliver(now + timedelta(seconds=299)) == 0
    assert mail.deliver(now + timedelta(seconds=301)) == 1
    first, second = mail.smtp.received
    assert first.message_id == second.message_id == row.message_id
    assert first.message.get_body("plain").get_content() == second.message.get_body("plain").get_content()  # type: ignore[union-attr]
    [sent] = mail.messages()
    assert (sent.status, sent.attempts) == ("sent", 2)


def test_a_worker_process_killed_mid_send_is_followed_by_a_resend_with_the_same_message_id(
    mail: Mail, backend: str, request: pytest.FixtureRequest
) -> None:
    mail.purchase(mail.account())
    schema = request.getfixturevalue("postgres_database").schema if backend == "postgresql" else ""
    url = mail.engine.url.render_as_string(hide_password=False)
    started = utcnow()
    process: list[subprocess.Popen[bytes]] = []
    # The server keeps the message, then the sender dies before it hears the answer (or records anything).
    mail.smtp.behaviour.after_data = lambda: os.kill(process[0].pid, signal.SIGKILL)
    process.append(
        subprocess.Popen(
            [sys.executable, "-m", "tests.outbox.killed_sender", url, schema, str(mail.smtp.port)],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "CREDITRAIL_ENVIRONMENT": "test"},
        )
    )
    assert process[0].wait(timeout=60) == -signal.SIGKILL
    [row] = mail.messages()
    assert (row.status, row.attempts) == ("pending", 1)
    assert len(mail.smtp.received) == 1
    mail.smtp.behaviour.after_data = None
    assert mail.deliver(started + timedelta(seconds=mail.settings.outbox_lease_seconds + 60)) == 1
    first, second = mail.smtp.received
    assert first.message_id == second.message_id == row.message_id
    [sent] = mail.messages()
    assert (sent.status, sent.attempts) == ("sent", 2)


def test_no_row_lock_is_held_while_the_smtp_server_stalls(mail: Mail, backend: str) -> None:
    account_id = mail.account()
    mail.purchase(account_id)
    release = threading.Event()
    mail.smtp.behaviour.stall = release
    outcome: list[int] = []
    sender = threading.Thread(target=lambda: outcome.append(mail.deliver()))
    sender.start()
    try:
        assert mail.smtp.behaviour.stalled.wait(20), "the SMTP conversation never reached DATA"
        # Mid-conversation: the same account spends, and its outbox row can be locked and written.
        with unit_of_work(mail.engine) as session:
            if backend == "postgresql":
                session.execute(text("SET LOCAL lock_timeout = '3s'"))
            spend(session, account_id=account_id, amount_credits=10, idempotency_key="during-smtp")
            locked = session.execute(
                text(
                    "SELECT id FROM outbox_messages FOR UPDATE"
                    if backend == "postgresql"
                    else "SELECT id FROM outbox_messages"
                )
            ).all()
            assert len(locked) == 1
        assert sender.is_alive()
    finally:
        release.set()
        sender.join(30)
    assert outcome == [1]
    [row] = mail.messages()
    assert row.status == "sent"


def test_the_delivery_job_runs_in_the_worker_only_with_an_smtp_server(mail: Mail) -> None:
    [job] = [spec for spec in default_jobs(mail.settings) if spec.name == "outbox.deliver"]
    assert job.step is not None
    assert job.batch_size == mail.settings.outbox_batch_size
    mail.purchase(mail.account())
    assert run_job_once(mail.engine, job).items == 1
    [row] = mail.messages()
    assert row.status == "sent"
    unset = mail.settings.model_copy(update={"smtp_host": ""})
    assert "outbox.deliver" not in {spec.name for spec in default_jobs(unset)}


def test_each_lane_sends_its_messages_over_one_connection(engine: Engine, smtp: TestSmtpServer) -> None:
    for lanes in (1, 2):
        mail = Mail(engine, mail_settings(engine, smtp.port, outbox_concurrency=lanes), smtp)
        for n in range(4):
            mail.purchase(mail.account(name=f"buyer {lanes} {n}"), ref=f"cs_test_{lanes}_{n}")
        smtp.received.clear()
        assert mail.deliver() == 4
        assert len(smtp.received) == 4
        assert len({received.peer for received in smtp.received}) == lanes


def test_a_batch_sent_over_several_lanes_sends_each_message_once_and_records_each(
    engine: Engine, smtp: TestSmtpServer
) -> None:
    mail = Mail(engine, mail_settings(engine, smtp.port, outbox_concurrency=3), smtp)
    for n in range(7):
        mail.purchase(mail.account(email=f"buyer{n}@example.test", name=f"buyer {n}"), ref=f"cs_test_{n}")
    smtp.behaviour.refuse_recipients["buyer4@example.test"] = "550 5.1.1 No such mailbox"
    assert mail.deliver() == 7
    assert mail.deliver() == 0
    rows = mail.messages()
    assert sorted(received.message_id for received in smtp.received) == sorted(
        row.message_id for row in rows if row.recipient != "buyer4@example.test"
    )
    assert sorted((row.recipient, row.status, row.attempts) for row in rows) == sorted(
        (f"buyer{n}@example.test", "failed" if n == 4 else "sent", 1) for n in range(7)
    )


def test_messages_written_while_the_server_is_down_are_each_delivered_once_when_it_is_back(engine: Engine) -> None:
    down = TestSmtpServer()  # its port, with nothing listening yet
    mail = Mail(engine, mail_settings(engine, down.port), down)
    buyers = [mail.account(email=f"buyer{i}@example.test", name=f"buyer {i}") for i in range(3)]
    for index, account_id in enumerate(buyers):
        mail.purchase(account_id, ref=f"cs_test_down_{index}")
    now = utcnow()
    assert mail.deliver(now) == 3  # each tried, none accepted
    assert all((row.status, row.attempts) == ("pending", 1) for row in mail.messages())
    # Another purchase while the server is still away: it waits too.
    mail.purchase(mail.account(email="late@example.test", name="late"), ref="cs_test_down_late")
    assert mail.deliver(now + timedelta(seconds=10)) == 1
    down.start()
    try:
        later = now + timedelta(minutes=10)
        while mail.deliver(later):  # every due message, then nothing is left
            later += timedelta(minutes=10)
        assert mail.deliver(later + timedelta(days=1)) == 0
    finally:
        down.stop()
    rows = mail.messages()
    assert [row.status for row in rows] == ["sent"] * 4
    by_id = Counter(received.message_id for received in down.received)
    assert by_id == Counter({row.message_id: 1 for row in rows})  # each once, none lost
    assert sorted(r for received in down.received for r in received.recipients) == sorted(row.recipient for row in rows)


def test_a_refused_address_fails_with_the_reason_while_the_other_messages_go_out(mail: Mail) -> None:
    mail.smtp.behaviour.refuse_recipients["gone@example.test"] = "550 5.1.1 No such user here"
    mail.purchase(mail.account(email="first@example.test", name="first"), ref="cs_test_first")
    mail.purchase(mail.account(email="gone@example.test", name="gone"), ref="cs_test_gone")
    mail.purchase(mail.account(email="last@example.test", name="last"), ref="cs_test_last")
    assert mail.deliver() == 3
    first, gone, last = mail.messages()
    assert (first.status, last.status) == ("sent", "sent")
    assert (gone.status, gone.attempts, gone.last_error) == ("failed", 1, "550 5.1.1 No such user here")
    assert gone.sent_at is None
    # The messages go out over parallel lanes, so they arrive in either order.
    assert sorted(received.message_id for received in mail.smtp.received) == sorted([first.message_id, last.message_id])
    assert mail.deliver(utcnow() + timedelta(days=30)) == 0  # a failed message is never tried again


def test_an_unverified_address_gets_its_receipt(mail: Mail) -> None:
    with unit_of_work(mail.engine) as session:
        account_id = create_customer_account(session, name="unverified")
        update_email(session, account_id, email="new@example.test", verified=False)
    mail.purchase(account_id)
    assert mail.deliver() == 1
    [received] = mail.smtp.received
    assert received.recipients == ["new@example.test"]


def test_a_receipt_is_rendered_when_first_sent_as_at_its_mint_and_resent_the_same(mail: Mail) -> None:
    account_id = mail.account()
    lot_id = mail.purchase(account_id, credits=1_000)
    [written] = mail.messages()
    assert (written.subject, written.body_text, written.body_html) == ("", "", "")
    mail.smtp.behaviour.data_reply = "451 4.3.0 Try again later"
    now = utcnow()
    assert mail.deliver(now) == 1
    [first] = mail.messages()
    assert (first.status, first.attempts) == ("pending", 1)
    assert first.subject == f"Your receipt CR-{now.year}-{lot_id:08d}: 1,000 credits"
    assert "New balance:      1,000 credits" in first.body_text
    # Credits spent after the mint do not change the receipt: it says the balance right after the mint.
    with unit_of_work(mail.engine) as session:
        spend(session, account_id=account_id, amount_credits=400, idempotency_key="after-the-mint")
    mail.smtp.behaviour.data_reply = None
    assert mail.deliver(now + timedelta(seconds=61)) == 1
    [received] = mail.smtp.received
    [sent] = mail.messages()
    assert (sent.status, sent.attempts) == ("sent", 2)
    assert (sent.subject, sent.body_text, sent.body_html) == (first.subject, first.body_text, first.body_html)
    assert received.message["Subject"] == first.subject
    body = received.message.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == first.body_text
