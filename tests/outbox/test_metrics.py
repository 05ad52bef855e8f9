"""The outbox in /metrics: its backlog and the oldest pending message's age, beside the card inbox's, in one family
each."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from services.app.app import create_app
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.outbox import repository as repo
from tests.ops.support import scrape, value
from tests.outbox.conftest import Mail


def test_the_outbox_backlog_and_its_oldest_age_are_scraped(mail: Mail) -> None:
    account_id = mail.account()
    mail.purchase(account_id, ref="cs_a")
    mail.purchase(account_id, ref="cs_b")
    with unit_of_work(mail.engine) as session:
        session.execute(update(repo.messages).values(created_at=utcnow() - timedelta(minutes=10)))
    app = create_app(mail.settings, engine=mail.engine)
    with TestClient(app) as client:
        before = scrape(client)
        assert value(before, "creditrail_queue_backlog_items", queue="outbox") == 2
        assert value(before, "creditrail_queue_oldest_age_seconds", queue="outbox") >= 600
        assert value(before, "creditrail_metrics_source_up", source="outbox") == 1
        assert ("creditrail_queue_backlog_items", (("queue", "card_webhook_inbox"),)) in before
        mail.deliver()
        after = scrape(client)
    assert value(after, "creditrail_queue_backlog_items", queue="outbox") == 0
    assert value(after, "creditrail_queue_oldest_age_seconds", queue="outbox") == 0
