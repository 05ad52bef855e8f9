"""Card receipts delivered to a real SMTP server (aiosmtpd in the test): the message the customer gets carries every
field of the receipt, and a purchase fulfilled by the webhook twice and by the sync job gets exactly one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest

from services.card.flows import sync
from services.card.repository import card_labels_of_purchases
from services.core.clock import utcnow
from services.core.settings import Settings
from services.outbox import service as outbox_service
from services.outbox.links import signature_valid
from services.outbox.mailer import SmtpMailer
from services.outbox.tasks import deliver
from tests.card.conftest import Card, Customer
from tests.outbox.smtp_server import TestSmtpServer


@dataclass
class Mailed:
    card: Card
    settings: Settings
    smtp: TestSmtpServer

    def customer(self, email: str, name: str) -> Customer:
        customer = self.card.customer(name)
        response = self.card.client.patch(
            f"/v1/admin/accounts/{customer.account_id}", json={"email": email}, headers=self.card.admin
        )
        assert response.status_code == 200, response.text
        return customer

    def deliver(self) -> int:
        return deliver(
            self.card.engine,
            self.settings,
            SmtpMailer(self.settings),
            utcnow(),
            50,
            cards_of_purchases=card_labels_of_purchases,
        )


@pytest.fixture
def mailed(card: Card) -> Iterator[Mailed]:
    smtp = TestSmtpServer().start()
    settings = card.settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_security": "none",
            "mail_from": "Credits <receipts@creditrail.test>",
            "support_email": "help@creditrail.test",
            "support_url": "https://help.creditrail.test",
        }
    )
    outbox_service.configure(settings)  # receipts rendered as the served process renders them
    try:
        yield Mailed(card, settings, smtp)
    finally:
        outbox_service.configure(None)
        smtp.stop()


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def _html(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def test_the_card_receipt_received_carries_every_field(mailed: Mailed) -> None:
    card = mailed.card
    customer = mailed.customer("buyer@example.test", "buyer")
    purchase = card.bought(customer, pack="pro")
    card.complete(purchase, payment_method="pm_card_mastercard")
    assert mailed.deliver() == 1
    [received] = mailed.smtp.received
    [lot] = card.card_lots(customer.account_id)
    number = f"CR-{lot.credited_at.year}-{lot.id:08d}"
    message = received.message
    assert received.recipients == ["buyer@example.test"]
    assert message["To"] == "buyer@example.test"
    assert message["From"] == "Credits <receipts@creditrail.test>"
    assert message["Subject"] == f"Your receipt {number}: 2,500 credits"
    text = _text(message)
    for expected in (
        f"Receipt:          {number}",
        f"Date:             {lot.credited_at:%Y-%m-%d %H:%M} UTC",
        "Paid:             $25.00 by card",
        "Card:             Mastercard ending 4444",
        "Pack:             Pro",
        f"Stripe reference: {purchase['checkout_session_id']}",
        "Credits:          2,500",
        f"Credits expire:   {lot.expires_at:%Y-%m-%d}",
        "New balance:      2,500 credits",
        "Questions? Email help@creditrail.test; Visit https://help.creditrail.test",
    ):
        assert expected in text, text
    [link] = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("View or print this receipt:")]
    assert link.startswith(f"https://app.example/receipts/{number}?sig=")
    assert signature_valid(mailed.settings, customer.account_id, number, link.split("?sig=", 1)[1])
    html = _html(message)
    assert "<th>Card</th><td>Mastercard ending 4444</td>" in html
    assert f"<td>{number}</td>" in html
    assert link.replace("&", "&amp;") in html
    # The link opens the same receipt with no token.
    page = card.client.get(link.removeprefix("https://app.example"))
    assert page.status_code == 200
    assert "Mastercard ending 4444" in page.text


def test_one_message_per_purchase_when_the_webhook_comes_twice_and_the_sync_job_mints_too(mailed: Mailed) -> None:
    card = mailed.card
    first = mailed.customer("one@example.test", "one")
    second = mailed.customer("two@example.test", "two")
    bought = [card.bought(first), card.bought(second)]
    sessions = [card.stripe.pay(purchase["checkout_session_id"]) for purchase in bought]
    sync.sync(card.engine, card.gateway, card.settings, utcnow())  # the sync job finds the paid sessions first
    for session in sessions:
        event = card.stripe.event("checkout.session.completed", session)
        card.deliver_ok(event)
        card.deliver_ok(event)
        card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    assert mailed.deliver() == 2
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert mailed.deliver() == 0
    by_recipient = Counter(r for received in mailed.smtp.received for r in received.recipients)
    assert by_recipient == Counter({"one@example.test": 1, "two@example.test": 1})
    assert len({received.message_id for received in mailed.smtp.received}) == 2
    # Minted by the sync job, the receipts still name the card (the listed sessions came with it).
    assert all("Card:             Visa ending 4242" in _text(r.message) for r in mailed.smtp.received)
