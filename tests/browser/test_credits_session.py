"""The credits page opened from the platform's link: the session in the URL's fragment shows the customer's
credits (and leaves the address bar); an expired link says so and leads back to the platform."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from services.apikeys import sessions
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger.minting import grant
from tests.browser.conftest import LiveApp, Screenshot

RETURN_URL = "https://platform.example/dashboard"


def _customer_with_credits(live_app: LiveApp, amount_credits: int) -> int:
    account_id, _key = live_app.customer()
    with unit_of_work(live_app.engine) as session:
        grant(session, account_id=account_id, amount_credits=amount_credits, idempotency_key="welcome", reason="test")
    return account_id


def test_the_session_link_shows_the_balance_and_leaves_the_address_bar(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id = _customer_with_credits(live_app, 1_234)
    created = live_app.customer_session(account_id, return_url=RETURN_URL)
    assert created["url"].startswith(f"{live_app.url}/credits#session=crs_")

    page.goto(created["url"])
    expect(page.locator("#available")).to_have_text("1,234 credits")
    expect(page.locator("#back")).to_have_text("Back to platform.example")
    expect(page.locator("#back")).to_have_attribute("href", RETURN_URL)
    expect(page.locator("#developer")).to_be_hidden()
    assert page.url == f"{live_app.url}/credits"  # the token left the address bar
    assert page.evaluate("sessionStorage.getItem('creditrail-session')") == created["token"]
    screenshot("session-balance")

    page.reload()  # the tab keeps the session
    expect(page.locator("#available")).to_have_text("1,234 credits")

    page.click("#logout")
    expect(page.locator("#ended-message")).to_contain_text("open the credits page again from platform.example")
    expect(page.locator("#account")).to_be_hidden()
    screenshot("signed-out")
    assert page.evaluate("sessionStorage.getItem('creditrail-session')") is None


def test_an_expired_session_link_says_so_and_leads_back(
    page: Page, live_app: LiveApp, screenshot: Screenshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = _customer_with_credits(live_app, 500)
    created = live_app.customer_session(account_id, return_url=RETURN_URL, lifetime_seconds=60)
    later = utcnow() + timedelta(minutes=2)

    def two_minutes_on() -> datetime:
        return later

    monkeypatch.setattr(sessions, "utcnow", two_minutes_on)

    page.goto(created["url"])
    expect(page.locator("#ended-message")).to_have_text(
        "This link has expired; open the credits page again from platform.example."
    )
    expect(page.locator("#ended-back")).to_have_attribute("href", RETURN_URL)
    expect(page.locator("#ended-back")).to_have_text("Back to platform.example")
    expect(page.locator("#account")).to_be_hidden()
    assert page.url == f"{live_app.url}/credits"
    screenshot("session-expired")
