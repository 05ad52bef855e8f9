"""Buying credits by card in a browser, end to end on one machine: the real app over HTTP, the Stripe stand-in's
checkout page in Chromium, its signed webhooks back to the app, and the credits page on return."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from services.card.repository import card_labels_of_purchases
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger.accounts import update_email
from services.outbox.mailer import SmtpMailer
from services.outbox.tasks import deliver
from tests.browser.conftest import LiveApp, Screenshot, wait_until
from tests.outbox.smtp_server import TestSmtpServer

STANDARD_PACK_CREDITS = 1_000


def _sign_in(page: Page, live_app: LiveApp, account_id: int) -> None:
    """The customer opens the credits page from the platform's link (a session in its fragment)."""
    page.goto(live_app.customer_session(account_id)["url"])
    expect(page.locator("#account")).to_be_visible()


def _start_purchase(live_app: LiveApp, key: str, idempotency_key: str) -> dict[str, object]:
    with live_app.api(key) as api:
        response = api.post(
            "/v1/card/purchases", json={"pack": "standard"}, headers={"Idempotency-Key": idempotency_key}
        )
    assert response.status_code == 201, response.text
    purchase: dict[str, object] = response.json()
    assert str(purchase["checkout_url"]).startswith(live_app.standin.url)
    return purchase


def _balance_credits(live_app: LiveApp, key: str) -> int:
    with live_app.api(key) as api:
        response = api.get("/v1/balance")
    assert response.status_code == 200, response.text
    return int(response.json()["available_credits"])


def _purchase_status(live_app: LiveApp, key: str, purchase_id: object) -> str:
    with live_app.api(key) as api:
        response = api.get(f"/v1/card/purchases/{purchase_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def _fill_card(page: Page, number: str) -> None:
    page.fill("#cardnumber", number)
    page.fill("#exp-date", "12 / 34")
    page.fill("#cvc", "123")


def test_paying_by_card_mints_the_credits(page: Page, live_app: LiveApp, screenshot: Screenshot) -> None:
    account_id, key = live_app.customer()
    _sign_in(page, live_app, account_id)
    purchase = _start_purchase(live_app, key, "browser-pay")

    page.goto(str(purchase["checkout_url"]))
    expect(page.locator("#standin-notice")).to_contain_text("not Stripe")
    expect(page.locator("#amount")).to_have_text("$10.00")
    expect(page.locator("#product")).to_contain_text("1,000 credits")
    screenshot("checkout")
    _fill_card(page, "4242 4242 4242 4242")
    screenshot("card-entered")
    page.click("#pay")

    page.wait_for_url(re.compile(r"/credits/purchase-complete\?"))
    assert f"purchase_id={purchase['id']}" in page.url
    assert f"session_id={purchase['checkout_session_id']}" in page.url
    expect(page.locator("#notice")).to_contain_text("completed")
    expect(page.locator("#available")).to_contain_text("1,000")
    screenshot("success")
    live_app.settle()
    assert _balance_credits(live_app, key) == STANDARD_PACK_CREDITS
    assert _purchase_status(live_app, key, purchase["id"]) == "completed"

    # The purchase in the history links its receipt, which names the card that paid.
    row = page.locator("#purchases li").first
    expect(row).to_contain_text("1,000 credits")
    receipt_link = row.locator("a.receipt")
    href = receipt_link.get_attribute("href")
    assert href is not None
    assert "sig=" in href
    page.goto(href if href.startswith("http") else live_app.url + href)
    expect(page.locator("body")).to_contain_text("Visa ending 4242")
    expect(page.locator("body")).to_contain_text("$10.00")
    screenshot("receipt")


def test_a_card_purchase_mails_one_receipt_naming_the_card(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id, key = live_app.customer()
    with unit_of_work(live_app.engine) as session:
        update_email(session, account_id, email="buyer@example.test", verified=True)
    purchase = _start_purchase(live_app, key, "browser-receipt")
    page.goto(str(purchase["checkout_url"]))
    _fill_card(page, "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url(re.compile(r"/credits/purchase-complete\?"))
    live_app.settle()

    smtp = TestSmtpServer().start()
    try:
        settings = live_app.settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_security": "none"}
        )
        assert (
            deliver(
                live_app.engine,
                settings,
                SmtpMailer(settings),
                utcnow(),
                10,
                cards_of_purchases=card_labels_of_purchases,
            )
            == 1
        )
        assert (
            deliver(
                live_app.engine,
                settings,
                SmtpMailer(settings),
                utcnow(),
                10,
                cards_of_purchases=card_labels_of_purchases,
            )
            == 0
        )
    finally:
        smtp.stop()
    [received] = smtp.received
    assert received.recipients == ["buyer@example.test"]
    text = received.message.get_body(preferencelist=("plain",))
    assert text is not None
    content = str(text.get_content())
    assert "Visa ending 4242" in content
    assert "1,000" in content
    assert "$10.00" in content
    assert re.search(r"CR-\d{4}-\d{8}", content)
    screenshot("returned")


def test_a_declined_card_shows_the_decline_and_mints_nothing(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    _account_id, key = live_app.customer()
    purchase = _start_purchase(live_app, key, "browser-decline")

    page.goto(str(purchase["checkout_url"]))
    _fill_card(page, "4000 0000 0000 0002")
    page.click("#pay")

    expect(page.locator("#error")).to_contain_text("Your card was declined.")
    screenshot("declined")
    assert page.url == purchase["checkout_url"]
    live_app.settle()
    assert _balance_credits(live_app, key) == 0
    assert _purchase_status(live_app, key, purchase["id"]) == "open"


def test_a_card_needing_authentication_pays_once_confirmed(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    _account_id, key = live_app.customer()
    purchase = _start_purchase(live_app, key, "browser-3ds")

    # Not signed in on the credits page: the success page confirms nothing, so the webhook alone mints.
    page.goto(str(purchase["checkout_url"]))
    _fill_card(page, "4000 0000 0000 3220")
    page.click("#pay")
    expect(page.locator("#authentication")).to_contain_text("confirm this payment")
    screenshot("authentication")
    page.click("#confirm")

    page.wait_for_url(re.compile(r"/credits/purchase-complete\?"))
    screenshot("success")
    live_app.settle()
    wait_until(lambda: _balance_credits(live_app, key) == STANDARD_PACK_CREDITS, "the credits to be minted")


def test_cancelling_returns_to_the_credits_page_and_mints_nothing(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id, key = live_app.customer()
    _sign_in(page, live_app, account_id)
    purchase = _start_purchase(live_app, key, "browser-cancel")

    page.goto(str(purchase["checkout_url"]))
    screenshot("checkout")
    page.click("#cancel")

    page.wait_for_url(re.compile(r"/credits/purchase-cancelled\?"))
    expect(page.locator("#notice")).to_contain_text("cancelled")
    screenshot("cancelled")
    live_app.settle()
    assert _balance_credits(live_app, key) == 0
    assert _purchase_status(live_app, key, purchase["id"]) == "open"


def _card_purchases(live_app: LiveApp, key: str) -> list[tuple[str, int]]:
    with live_app.api(key) as api:
        response = api.get("/v1/purchases")
    assert response.status_code == 200, response.text
    return [(item["rail"], item["credits"]) for item in response.json()["data"]]


def test_a_double_click_on_buy_starts_one_purchase(page: Page, live_app: LiveApp, screenshot: Screenshot) -> None:
    account_id, key = live_app.customer()
    _sign_in(page, live_app, account_id)
    page.locator("#packs button[data-pack=standard]").dblclick()

    page.wait_for_url(re.compile(re.escape(live_app.standin.url)))
    expect(page.locator("#amount")).to_have_text("$10.00")
    screenshot("checkout")
    assert _card_purchases(live_app, key) == [("card", STANDARD_PACK_CREDITS)]


def test_a_custom_amount_is_checked_beside_its_field_then_bought(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id, key = live_app.customer()
    _sign_in(page, live_app, account_id)
    page.fill("#custom-credits", "1234")
    page.click("#custom-buy")
    expect(page.locator("#buy-error")).to_have_text("Choose a multiple of 500 credits.")
    screenshot("custom-refused")
    assert _card_purchases(live_app, key) == []

    page.fill("#custom-credits", "1500")
    page.click("#custom-buy")
    page.wait_for_url(re.compile(re.escape(live_app.standin.url)))
    expect(page.locator("#amount")).to_have_text("$15.00")
    expect(page.locator("#product")).to_contain_text("1,500 credits")
    assert _card_purchases(live_app, key) == [("card", 1_500)]
