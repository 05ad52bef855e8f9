"""Card receipts: written in the mint's transaction (once, however the purchase is fulfilled), rendered from the
ledger, viewable by their owner only, linked from the purchase history; a refund writes a notice. Emails are set by
the platform and changed by the customer."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import zlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from services.card.flows import sync
from services.card.repository import card_labels_of_purchases
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.events import repository as events_repo
from services.outbox import repository as outbox_repo
from services.outbox import service as outbox_service
from services.outbox.receipts import PRINT_CSS_HASH
from tests.card.conftest import Card, Customer


def _messages(card: Card) -> list[Any]:
    with unit_of_work(card.engine) as session:
        table = outbox_repo.messages
        rows = list(session.execute(select(table).order_by(table.c.id)).all())
        # Receipts are rendered when first sent: rendered here as the worker would.
        return outbox_service.render_receipts(session, rows, card.settings, cards_of_purchases=card_labels_of_purchases)


def _with_email(card: Card, email: str = "buyer@example.test", **kw: Any) -> Customer:
    customer = card.customer(**kw)
    response = card.client.patch(
        f"/v1/admin/accounts/{customer.account_id}",
        json={"email": email, "email_verified": True},
        headers=card.admin,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["email"], response.json()["email_verified"]) == (email, True)
    return customer


def test_a_paid_card_purchase_writes_its_receipt_from_the_ledger(card: Card) -> None:
    customer = _with_email(card, credits=300)
    purchase = card.bought(customer, pack="pro")
    card.complete(purchase)
    row = card.purchase(purchase["id"])
    [lot] = card.card_lots(customer.account_id)
    [message] = _messages(card)
    number = f"CR-{lot.credited_at.year}-{lot.id:08d}"
    assert (message.kind, message.dedupe_key, message.recipient) == (
        "receipt",
        f"receipt:lot:{row.lot_id}",
        "buyer@example.test",
    )
    assert message.subject == f"Your receipt {number}: 2,500 credits"
    text = message.body_text
    for expected in (
        f"Receipt:          {number}",
        "Paid:             $25.00 by card",
        "Card:             Visa ending 4242",
        "Pack:             Pro",
        "Credits:          2,500",
        f"Credits expire:   {lot.expires_at:%Y-%m-%d}",
        "New balance:      2,800 credits",
        f"/receipts/{number}",
    ):
        assert expected in text, text
    assert f"<td>{number}</td>" in message.body_html
    assert message.message_id.startswith(f"<receipt.lot.{lot.id}.")


def test_one_receipt_per_purchase_when_the_webhook_comes_twice_and_the_sync_job_mints_too(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    session = card.stripe.pay(purchase["checkout_session_id"])
    event = card.stripe.event("checkout.session.completed", session)
    sync.sync(card.engine, card.gateway, card.settings, utcnow())  # the sync job finds the paid session first
    card.deliver_ok(event)
    card.deliver_ok(event)
    card.deliver_ok(card.stripe.event("checkout.session.completed", session))
    sync.sync(card.engine, card.gateway, card.settings, utcnow())
    assert len(card.card_lots(customer.account_id)) == 1
    assert [m.kind for m in _messages(card)] == ["receipt"]


def test_the_receipt_names_the_card_stripe_says_paid_and_the_purchase_shows_it(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    card.complete(purchase, payment_method="pm_card_amex")
    [message] = _messages(card)
    assert "Card:             American Express ending 8431" in message.body_text
    assert "<th>Card</th><td>American Express ending 8431</td>" in message.body_html
    shown = card.client.get(f"/v1/card/purchases/{purchase['id']}", headers=customer.headers).json()
    assert (shown["card_brand"], shown["card_last4"]) == ("amex", "8431")
    assert shown["card_label"] == "American Express ending 8431"


def test_a_receipt_goes_out_without_the_card_when_stripe_cannot_say_which_card_paid(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    card.stripe.fail("GET", "/v1/payment_intents/", "500", times=10)
    card.complete(purchase)
    assert card.available(customer.account_id) == 1_000
    [message] = _messages(card)
    assert "Paid:             $10.00 by card" in message.body_text
    assert "Card:" not in message.body_text
    row = card.purchase(purchase["id"])
    assert (row.status, row.card_brand, row.card_last4) == ("completed", None, None)
    shown = card.client.get(f"/v1/card/purchases/{purchase['id']}", headers=customer.headers).json()
    assert shown["card_label"] is None


def test_an_account_without_an_email_gets_no_receipt(card: Card) -> None:
    customer = card.customer()
    card.complete(card.bought(customer))
    assert card.available(customer.account_id) == 1_000
    assert _messages(card) == []


def test_a_refund_writes_a_notice_once(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    card.complete(purchase)
    charge = card.stripe.refund(card.stripe.charge_of(purchase["checkout_session_id"])["id"], 1_000)
    event = card.stripe.event("charge.refunded", charge)
    card.deliver_ok(event)
    card.deliver_ok(event)
    _receipt, notice = _messages(card)
    assert notice.kind == "clawback_notice"
    assert "Credits taken back: 1,000" in notice.body_text
    assert "New balance: 0 credits" in notice.body_text


def test_a_lost_dispute_writes_one_notice_however_often_its_events_come(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    card.complete(purchase)
    charge = card.stripe.charge_of(purchase["checkout_session_id"])
    dispute = card.stripe.dispute(charge["id"], amount_cents=600)
    for event_type, status in [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.closed", "lost"),
        ("charge.dispute.closed", "lost"),
    ]:
        card.deliver_ok(card.stripe.event(event_type, dispute | {"status": status}))
    assert card.available(customer.account_id) == 400
    receipt, notice = _messages(card)
    assert (receipt.kind, notice.kind) == ("receipt", "clawback_notice")
    number = _number(card, customer.account_id)
    assert notice.subject == f"Credits taken back from {number}"
    assert "Credits taken back: 600" in notice.body_text
    assert f"Why: dispute {dispute['id']}" in notice.body_text
    assert "New balance: 400 credits" in notice.body_text
    assert notice.dedupe_key.startswith("clawback:txn:")


def test_a_won_dispute_gives_the_credits_back_with_one_notice_and_one_event(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    card.complete(purchase)
    charge = card.stripe.charge_of(purchase["checkout_session_id"])
    dispute = card.stripe.dispute(charge["id"], amount_cents=600)
    card.deliver_ok(card.stripe.event("charge.dispute.created", dispute))
    assert card.available(customer.account_id) == 400
    won = card.stripe.close_dispute(dispute["id"], "won")
    for _ in range(2):
        card.deliver_ok(card.stripe.event("charge.dispute.closed", won))
    assert card.available(customer.account_id) == 1_000
    receipt, taken, given = _messages(card)
    assert (receipt.kind, taken.kind, given.kind) == ("receipt", "clawback_notice", "reinstatement_notice")
    number = _number(card, customer.account_id)
    assert given.subject == f"Credits given back to {number}"
    assert "Credits given back: 600" in given.body_text
    assert f"Why: dispute {dispute['id']} won" in given.body_text
    assert "New balance: 1,000 credits" in given.body_text
    assert given.dedupe_key.startswith("reinstatement:txn:")
    with unit_of_work(card.engine) as session:
        events = list(session.execute(select(events_repo.events).order_by(events_repo.events.c.id)).all())
    [reinstated] = [event for event in events if event.type == "dispute.reinstated"]
    assert reinstated.account_id == customer.account_id
    assert reinstated.data == {
        "purchase_id": purchase["id"],
        "lot_id": card.purchase(purchase["id"]).lot_id,
        "dispute_id": dispute["id"],
        "status": "won",
        "transaction_id": int(given.dedupe_key.rsplit(":", 1)[1]),
        "amount_credits": 600,
    }
    assert reinstated.dedupe_key == given.dedupe_key.replace("reinstatement:", "dispute.reinstated:")


def _number(card: Card, account_id: int) -> str:
    [lot] = card.card_lots(account_id)
    return f"CR-{lot.credited_at.year}-{lot.id:08d}"


def test_the_receipt_link_opens_without_a_token_and_nothing_else_does(card: Card) -> None:
    customer = _with_email(card)
    purchase = card.bought(customer)
    card.complete(purchase)
    [item] = card.client.get("/v1/purchases", headers=customer.headers).json()["data"]
    number = _number(card, customer.account_id)
    link = urlsplit(item["receipt_url"])
    assert (link.scheme, link.netloc, link.path) == ("https", "app.example", f"/receipts/{number}")
    [sig] = parse_qs(link.query)["sig"]
    opened = card.client.get(f"{link.path}?{link.query}")  # no Authorization: a mail client, a new tab
    assert opened.status_code == 200
    assert opened.headers["content-type"].startswith("text/html")
    assert "$10.00 by card" in opened.text
    assert "Card</th><td>Visa ending 4242" in opened.text
    # The page sums the journal up to the mint; the email read the balance then: the same figure.
    assert "<th>New balance</th><td>1,000 credits</td>" in opened.text
    spent = card.client.post(
        "/v1/charges", json={"amount_credits": 300}, headers={**customer.headers, "Idempotency-Key": "after"}
    )
    assert spent.status_code == 201, spent.text
    assert "<th>New balance</th><td>1,000 credits</td>" in card.client.get(f"{link.path}?{link.query}").text

    other = card.customer("other")
    refused = [
        card.client.get(link.path),  # no signature, no token
        card.client.get(f"{link.path}?sig="),
        card.client.get(f"{link.path}?sig={sig[:-1]}A" if not sig.endswith("A") else f"{link.path}?sig={sig[:-1]}B"),
        card.client.get(f"{link.path}?sig={'x' * 101}"),  # longer than any signature: the same answer
        card.client.get(link.path, headers=other.headers),  # another account's key
        card.client.get(link.path, headers={"Authorization": "Bearer cr_not_a_key"}),
        # The signature of one receipt opens no other.
        card.client.get(f"/receipts/CR-{number[3:7]}-{int(number[8:]) + 1:08d}?sig={sig}"),
        card.client.get(f"/receipts/CR-1999-{number[8:]}?sig={sig}"),
        card.client.get(f"/receipts/nonsense?sig={sig}"),
    ]
    for answer in refused:
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "receipt_not_found"), answer.text
    # The owner's own key or session opens it without a signature, on the page and on the API.
    assert card.client.get(link.path, headers=customer.headers).status_code == 200
    assert card.client.get(f"/v1/receipts/{number}", headers=customer.headers).status_code == 200
    assert card.client.get(f"/v1/receipts/{number}", headers=other.headers).status_code == 404
    assert card.client.get(f"/v1/receipts/{number}").status_code == 401  # the API wants a key, as always


def test_the_receipt_page_allows_only_its_own_style_and_print_script(card: Card) -> None:
    customer = _with_email(card)
    card.complete(card.bought(customer))
    [item] = card.client.get("/v1/purchases", headers=customer.headers).json()["data"]
    page = card.client.get(item["receipt_url"].removeprefix("https://app.example"))
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert f"style-src '{PRINT_CSS_HASH}'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in page.headers["cache-control"]
    [style] = re.findall(r"<style>(.*?)</style>", page.text, re.S)
    assert "sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() == PRINT_CSS_HASH
    assert "@media print" in style
    assert "onclick" not in page.text
    assert "<script>" not in page.text
    assert '<button type="button" id="print">Print</button>' in page.text
    assert '<script src="https://app.example/receipts/print.js" defer></script>' in page.text
    script = card.client.get("/receipts/print.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "window.print()" in script.text


def _pdf_text(document: bytes) -> str:
    """The text a PDF shows: its (compressed) content streams' strings, one per line."""
    shown = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", document, re.S):
        content = zlib.decompress(stream).decode("latin-1")
        shown += [m.replace("\\(", "(").replace("\\)", ")") for m in re.findall(r"\(((?:[^()\\]|\\.)*)\) ?Tj", content)]
    return "\n".join(shown)


def test_the_receipt_is_also_a_pdf_opened_the_same_ways(card: Card) -> None:
    customer = _with_email(card)
    card.complete(card.bought(customer, pack="pro"))
    [item] = card.client.get("/v1/purchases", headers=customer.headers).json()["data"]
    number = _number(card, customer.account_id)
    link = urlsplit(item["receipt_url"])
    page = card.client.get(f"{link.path}?{link.query}")
    pdf_link = f"https://app.example{link.path}.pdf?{link.query}"
    assert f'<a href="{html.escape(pdf_link, quote=True)}">Download PDF</a>' in page.text
    opened = card.client.get(f"{link.path}.pdf?{link.query}")  # the page's signature, no token
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "application/pdf"
    assert opened.headers["content-disposition"] == f'inline; filename="{number}.pdf"'
    assert opened.content.startswith(b"%PDF-")
    text = _pdf_text(opened.content)
    for expected in (f"Receipt {number}", "$25.00 by card", "Visa ending 4242", "2,500", "2,500 credits"):
        assert expected in text, text
    assert card.client.get(f"{link.path}.pdf?{link.query}").content == opened.content  # the same bytes each time
    other = card.customer("other")
    assert card.client.get(f"{link.path}.pdf").status_code == 404
    assert card.client.get(f"{link.path}.pdf", headers=other.headers).status_code == 404
    assert card.client.get(f"{link.path}.pdf", headers=customer.headers).status_code == 200
    assert card.client.get(f"/v1/receipts/{number}.pdf", headers=customer.headers).content == opened.content
    assert card.client.get(f"/v1/receipts/{number}.pdf", headers=other.headers).status_code == 404


def test_the_mailed_receipt_carries_the_signed_link(card: Card) -> None:
    outbox_service.configure(card.settings)
    try:
        customer = _with_email(card)
        card.complete(card.bought(customer))
    finally:
        outbox_service.configure(None)
    [message] = _messages(card)
    [item] = card.client.get("/v1/purchases", headers=customer.headers).json()["data"]
    url = item["receipt_url"]
    assert "?sig=" in url
    assert f"View or print this receipt: {url}" in message.body_text
    assert f'<a href="{html.escape(url, quote=True)}">View or print this receipt</a>' in message.body_html


def test_a_customer_changing_its_email_makes_it_unverified_and_a_bad_one_is_refused(card: Card) -> None:
    customer = _with_email(card)
    changed = card.client.patch("/v1/account", json={"email": "New@Example.test"}, headers=customer.headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["email"], changed.json()["email_verified"]) == ("New@example.test", False)
    bad = card.client.patch("/v1/account", json={"email": "not an address"}, headers=customer.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_email"
    assert card.client.get("/v1/account", headers=customer.headers).json()["email"] == "New@example.test"
    # The platform verifies it; keeping the same address keeps that.
    card.client.patch(f"/v1/admin/accounts/{customer.account_id}", json={"email_verified": True}, headers=card.admin)
    same = card.client.patch("/v1/account", json={"email": "New@example.test"}, headers=customer.headers)
    assert same.json()["email_verified"] is True
