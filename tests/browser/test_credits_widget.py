"""The credits component in Chromium: /credits at full width and the widget in a platform's top bar (the
development demo page, opened on another host name so the widget runs cross-origin), against the real app with a
USDC chain on anvil and the Stripe stand-in.

What a person sees without reloading (a deposit confirming, then credited), at 375 px wide with no sideways scroll,
with the keyboard alone (Tab, Enter, Escape), and long histories paged with "Load more".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from chain.devchain import LocalToken, mine
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import ChainSettings
from services.ledger.minting import grant
from services.usdc.flows.listener import confirm_deposits, poll_chain
from services.usdc.flows.observe import observe_transaction
from tests.browser.conftest import (
    PAGE_TIMEOUT_MS,
    LiveApp,
    MakeLiveApp,
    Screenshot,
    deep_focus,
    focus_is_visible,
    no_horizontal_scroll,
    tab_to,
    wait_until,
)
from tests.chain.conftest import CHAIN_ID, anvil, ensure_node_modules, rpc, token, wallet
from tests.usdc.conftest import chain_settings_for, random_xpub
from tests.usdc.support import send_transfer

__all__ = ["anvil", "ensure_node_modules", "rpc", "token", "wallet"]

RETURN_URL = "https://platform.example/dashboard"
# The component polls every 4 s while shown: a change must be on screen within a few polls.
LIVE_TIMEOUT_MS = 20_000
PAGE_SIZE = 10


@dataclass
class UsdcApp:
    app: LiveApp
    chain: ChainSettings
    rpc: ChainRpc
    token: LocalToken

    def settle(self) -> None:
        """What the worker does: scan the chain up to its head, then credit what has enough confirmations."""
        for _ in range(50):
            if poll_chain(self.app.engine, self.chain, self.rpc, now=utcnow()).caught_up:
                break
        confirm_deposits(self.app.engine, self.chain, self.rpc, now=utcnow())


@pytest.fixture
def usdc_app(make_live_app: MakeLiveApp, rpc: ChainRpc, token: LocalToken) -> UsdcApp:
    mine(rpc, 4)
    chain = chain_settings_for(rpc, token, confirmations=3)
    app = make_live_app(usdc_xpub=random_xpub(), usdc_chains=[chain])
    return UsdcApp(app, chain, rpc, token)


@pytest.fixture
def narrow(browser: Browser) -> Iterator[Page]:
    """A phone's viewport: 375 px wide."""
    context = browser.new_context(viewport={"width": 375, "height": 800})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def _customer_with_grants(app: LiveApp, grants: int, amount_credits: int = 500) -> int:
    account_id, _key = app.customer()
    with unit_of_work(app.engine) as session:
        for n in range(grants):
            grant(session, account_id=account_id, amount_credits=amount_credits, idempotency_key=f"welcome-{n}")
    return account_id


def _open_credits(page: Page, app: LiveApp, account_id: int) -> dict[str, str]:
    created = app.customer_session(account_id, return_url=RETURN_URL)
    page.goto(created["url"])
    expect(page.locator("#account")).to_be_visible()
    return created


def _demo_url(app: LiveApp, token: str) -> str:
    """The demo host page on another origin than the API's (localhost, not 127.0.0.1): the widget runs
    cross-origin, as on a platform's page."""
    return app.url.replace("127.0.0.1", "localhost") + f"/dev/widget-demo#session={token}"


def test_a_purchase_paid_over_x402_is_labelled_so(page: Page, usdc_app: UsdcApp) -> None:
    account_id, _key = usdc_app.app.customer()
    _open_credits(page, usdc_app.app, account_id)
    address = page.locator(f"#address-{CHAIN_ID}")
    expect(address).to_have_text(re.compile(r"^0x[0-9a-fA-F]{40}$"))
    signed, _ = send_transfer(usdc_app.token, address.inner_text(), 5_000_000)
    app, chain = usdc_app.app, usdc_app.chain
    observe_transaction(app.engine, chain, usdc_app.rpc, signed.tx_hash, now=utcnow(), credit_now=True)
    expect(page.locator("#available")).to_have_text("500 credits", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#purchases li").first).to_contain_text("USDC purchase via x402", timeout=LIVE_TIMEOUT_MS)


def test_a_usdc_deposit_on_anvil_appears_without_a_reload(
    page: Page, usdc_app: UsdcApp, screenshot: Screenshot
) -> None:
    account_id, _key = usdc_app.app.customer()
    _open_credits(page, usdc_app.app, account_id)
    address = page.locator(f"#address-{CHAIN_ID}")
    expect(address).to_have_text(re.compile(r"^0x[0-9a-fA-F]{40}$"))
    expect(page.locator(f"#qr-{CHAIN_ID} svg")).to_be_visible()
    expect(page.locator("#available")).to_have_text("0 credits")

    # The amount typed goes into the EIP-681 link (base units) and its QR code.
    page.fill(f"#amount-{CHAIN_ID}", "25")
    expect(page.locator(f"#pay-link-{CHAIN_ID}")).to_have_attribute("href", re.compile(r"uint256=25000000$"))
    page.fill(f"#amount-{CHAIN_ID}", "0.5")
    expect(page.locator(f"#amount-error-{CHAIN_ID}")).to_contain_text("Send from 1.00 USDC")
    page.fill(f"#amount-{CHAIN_ID}", "25")
    expect(page.locator(f"#amount-error-{CHAIN_ID}")).to_be_empty()
    screenshot("usdc-funding")

    send_transfer(usdc_app.token, address.inner_text(), 25_000_000)
    usdc_app.settle()
    pending = page.locator("#pending")
    expect(pending).to_contain_text("25.00 USDC", timeout=LIVE_TIMEOUT_MS)
    expect(pending).to_contain_text("to go")
    screenshot("deposit-pending")

    mine(usdc_app.rpc, 3)
    usdc_app.settle()
    expect(page.locator("#available")).to_have_text("2,500 credits", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#available-usd")).to_have_text("($25.00)")
    expect(pending).to_have_count(0)
    purchase = page.locator("#purchases li").first
    expect(purchase).to_contain_text("USDC purchase", timeout=LIVE_TIMEOUT_MS)
    expect(purchase).to_contain_text("2,500 credits")
    expect(purchase.locator("a.receipt")).to_have_attribute("href", re.compile(r"/receipts/CR-\d{4}-\d{8}\?sig="))
    expect(page.locator("#transactions li").first).to_contain_text("Purchase", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#lots li")).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
    screenshot("deposit-credited")


def test_the_widget_on_a_platforms_page_shows_the_balance_and_opens_the_panel(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id = _customer_with_grants(live_app, 2, 750)
    created = live_app.customer_session(account_id, return_url=RETURN_URL)
    page.goto(_demo_url(live_app, created["token"]))
    badge = page.locator("#badge")
    expect(badge).to_contain_text("1,500")
    assert page.url.endswith("/dev/widget-demo")  # the host wiped the token from its address bar
    screenshot("badge")

    badge.click()
    dialog = page.locator("#dialog")
    expect(dialog).to_be_visible()
    expect(badge).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#available")).to_have_text("1,500 credits")
    expect(page.locator("#available-usd")).to_have_text("($15.00)")
    expect(page.locator("#lots li")).to_have_count(2)
    expect(page.locator("#transactions li").first).to_contain_text("Promotional credits")
    expect(page.locator("#packs button")).to_have_count(4)
    expect(page.locator("#usdc")).to_contain_text("not enabled")
    expect(page.locator("#recharge-card")).to_contain_text("next card purchase")
    expect(page.locator("#alerts-form")).to_be_visible()
    screenshot("panel-open")

    page.click("#close")
    expect(dialog).to_be_hidden()
    assert deep_focus(page) == "badge"

    # A grant lands while the panel is closed: the badge follows by itself.
    with unit_of_work(live_app.engine) as session:
        grant(session, account_id=account_id, amount_credits=500, idempotency_key="later")
    expect(badge).to_contain_text("2,000", timeout=LIVE_TIMEOUT_MS)

    # The session ends: the widget says so and tells the host, which may fetch another.
    with live_app.api(created["token"]) as api:
        assert api.post("/v1/session/logout").status_code == 204
    expect(page.locator("#demo-status")).to_contain_text("session_revoked", timeout=LIVE_TIMEOUT_MS)
    expect(badge).to_contain_text("Sign in again")
    screenshot("session-ended")


def test_at_375_px_nothing_scrolls_sideways(narrow: Page, usdc_app: UsdcApp, tmp_path: Path) -> None:
    page = narrow
    account_id = _customer_with_grants(usdc_app.app, 3)
    _open_credits(page, usdc_app.app, account_id)
    expect(page.locator(f"#qr-{CHAIN_ID} svg")).to_be_visible()
    expect(page.locator("#lots li")).to_have_count(3)
    assert no_horizontal_scroll(page), "the credits page scrolls sideways at 375 px"
    page.screenshot(path=str(tmp_path / "375-page.png"), full_page=True)

    created = usdc_app.app.customer_session(account_id)
    page.goto(_demo_url(usdc_app.app, created["token"]))
    expect(page.locator("#badge")).to_contain_text("1,500")
    assert no_horizontal_scroll(page), "the host page with the widget scrolls sideways at 375 px"
    page.click("#badge")
    expect(page.locator(f"#qr-{CHAIN_ID} svg")).to_be_visible()
    expect(page.locator("#lots li")).to_have_count(3)
    assert no_horizontal_scroll(page), "the widget's open panel scrolls sideways at 375 px"
    panel_width = page.evaluate(
        "document.querySelector('creditrail-credits').shadowRoot.getElementById('dialog').scrollWidth"
    )
    assert panel_width <= 375, f"the panel's content is {panel_width} px wide"
    page.screenshot(path=str(tmp_path / "375-widget-open.png"), full_page=True)


def _clipboard(context: BrowserContext, app: LiveApp) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app.url)


def test_the_keyboard_alone_copies_loads_more_and_buys(page: Page, usdc_app: UsdcApp, screenshot: Screenshot) -> None:
    _clipboard(page.context, usdc_app.app)
    account_id = _customer_with_grants(usdc_app.app, PAGE_SIZE + 2, 100)
    _open_credits(page, usdc_app.app, account_id)
    address = page.locator(f"#address-{CHAIN_ID}").inner_text()
    expect(page.locator("#transactions li")).to_have_count(PAGE_SIZE)
    page.locator("body").focus()

    tab_to(page, lambda focused: focused == f"copy-{CHAIN_ID}", "the copy button")
    assert focus_is_visible(page)
    screenshot("keyboard-copy-focused")
    page.keyboard.press("Enter")
    expect(page.locator(f"#copy-{CHAIN_ID} + [role=status]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == address

    tab_to(page, lambda focused: focused == "more-transactions", "Load more transactions")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("#transactions li")).to_have_count(PAGE_SIZE + 2)
    expect(page.locator("#more-transactions")).to_be_hidden()
    screenshot("keyboard-loaded-more")

    # Shift+Tab back up to the packs: Enter on Buy goes to Checkout, once.
    for _ in range(200):
        page.keyboard.press("Shift+Tab")
        if (deep_focus(page) or "").startswith("Buy Starter"):
            break
    else:
        raise AssertionError("Shift+Tab never reached the Starter pack's Buy button")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(usdc_app.app.standin.url)))
    expect(page.locator("#product")).to_contain_text("500 credits")
    screenshot("keyboard-checkout")


def test_the_keyboard_opens_and_escape_closes_the_widget(page: Page, live_app: LiveApp, screenshot: Screenshot) -> None:
    account_id = _customer_with_grants(live_app, 1)
    created = live_app.customer_session(account_id)
    page.goto(_demo_url(live_app, created["token"]))
    expect(page.locator("#badge")).to_contain_text("500")
    page.locator("body").focus()

    tab_to(page, lambda focused: focused == "badge", "the widget's badge")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("#dialog")).to_be_visible()
    assert deep_focus(page) == "close"
    tab_to(page, lambda focused: (focused or "").startswith("Buy Standard"), "a pack's Buy button")
    assert focus_is_visible(page)
    screenshot("widget-keyboard")
    page.keyboard.press("Escape")
    expect(page.locator("#dialog")).to_be_hidden()
    assert deep_focus(page) == "badge", "focus goes back to the badge"

    page.keyboard.press("Enter")
    expect(page.locator("#dialog")).to_be_visible()
    page.keyboard.press("Enter")  # on Close
    expect(page.locator("#dialog")).to_be_hidden()
    assert deep_focus(page) == "badge"


def test_load_more_pages_through_long_histories(page: Page, live_app: LiveApp, screenshot: Screenshot) -> None:
    account_id = _customer_with_grants(live_app, 2 * PAGE_SIZE + 3, 100)
    _open_credits(page, live_app, account_id)
    transactions, lots = page.locator("#transactions li"), page.locator("#lots li")
    expect(transactions).to_have_count(PAGE_SIZE)
    expect(lots).to_have_count(PAGE_SIZE)

    page.click("#more-transactions")
    expect(transactions).to_have_count(2 * PAGE_SIZE)
    page.click("#more-transactions")
    expect(transactions).to_have_count(2 * PAGE_SIZE + 3)
    expect(page.locator("#more-transactions")).to_be_hidden()
    page.click("#more-lots")
    expect(lots).to_have_count(2 * PAGE_SIZE)
    screenshot("loaded-more")

    # What loaded further down stays when polling brings a new transaction on top.
    with unit_of_work(live_app.engine) as session:
        grant(session, account_id=account_id, amount_credits=700, idempotency_key="fresh")
    expect(transactions.first).to_contain_text("+700", timeout=LIVE_TIMEOUT_MS)
    expect(transactions).to_have_count(2 * PAGE_SIZE + 4)
    wait_until(lambda: page.locator("#available").inner_text() == "3,000 credits", "the balance to follow")


def _budgets(app: LiveApp, key: str) -> list[tuple[str, str, int]]:
    with app.api(key) as api:
        response = api.get("/v1/budgets")
    assert response.status_code == 200, response.text
    return [(b["scope"], b["period"], b["limit_credits"]) for b in response.json()["data"]]


def test_the_monthly_limit_is_set_changed_and_removed(page: Page, live_app: LiveApp, screenshot: Screenshot) -> None:
    account_id, key = live_app.customer()
    _open_credits(page, live_app, account_id)
    state = page.locator("#monthly-state")
    expect(state).to_contain_text("No monthly limit")

    page.fill("#monthly-limit", "2000")
    page.click("#monthly-save")
    expect(state).to_have_text("0 of 2,000 credits used this month.")
    assert _budgets(live_app, key) == [("account", "month", 2_000)]

    page.fill("#monthly-limit", "-5")
    page.click("#monthly-save")
    expect(page.locator("#monthly-error")).to_contain_text("whole number of credits")
    screenshot("monthly-limit-refused")
    assert _budgets(live_app, key) == [("account", "month", 2_000)]

    page.fill("#monthly-limit", "3000")
    page.click("#monthly-save")
    expect(state).to_have_text("0 of 3,000 credits used this month.")
    expect(page.locator("#monthly-error")).to_be_empty()
    assert _budgets(live_app, key) == [("account", "month", 3_000)]

    page.fill("#monthly-limit", "")
    page.click("#monthly-save")
    expect(state).to_contain_text("No monthly limit")
    assert _budgets(live_app, key) == []


def _alerts(app: LiveApp, key: str) -> dict[str, object]:
    with app.api(key) as api:
        response = api.get("/v1/account/alerts")
    assert response.status_code == 200, response.text
    alerts: dict[str, object] = response.json()
    return alerts


def test_the_low_balance_alert_is_set_refused_when_bad_and_turned_off(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id, key = live_app.customer()
    _open_credits(page, live_app, account_id)
    state = page.locator("#alert-state")
    expect(page.locator("#alerts-form")).to_be_visible()
    expect(state).to_have_text("No low-balance alert.")

    page.fill("#alert-threshold", "500")
    page.check("#alert-email")
    page.click("#alerts-save")
    expect(state).to_contain_text("Armed")
    alerts = _alerts(live_app, key)
    assert (alerts["low_balance_threshold_credits"], alerts["email_enabled"]) == (500, True)
    screenshot("alert-set")

    page.fill("#alert-threshold", "12.5")
    page.click("#alerts-save")
    expect(page.locator("#alerts-error")).to_contain_text("whole number of credits")
    assert _alerts(live_app, key)["low_balance_threshold_credits"] == 500
    screenshot("alert-refused")

    page.fill("#alert-threshold", "")
    page.click("#alerts-save")
    expect(state).to_have_text("No low-balance alert.")
    expect(page.locator("#alerts-error")).to_be_empty()
    assert _alerts(live_app, key)["low_balance_threshold_credits"] is None


def test_auto_recharge_asks_for_a_saved_card_then_turns_on(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id, key = live_app.customer()
    _open_credits(page, live_app, account_id)
    expect(page.locator("#recharge-state")).to_have_text("Off.")
    expect(page.locator("#recharge-card")).to_contain_text("No card saved yet")
    page.check("#recharge-enabled")
    page.fill("#recharge-threshold", "200")
    page.click("#recharge-save")
    expect(page.locator("#recharge-error")).to_contain_text("Save a card first")
    screenshot("recharge-needs-a-card")

    # The next card purchase saves the card.
    page.check("#save-card")
    page.locator("#packs button[data-pack=starter]").click()
    page.wait_for_url(re.compile(re.escape(live_app.standin.url)))
    page.fill("#cardnumber", "4242 4242 4242 4242")
    page.fill("#exp-date", "12 / 34")
    page.fill("#cvc", "123")
    page.click("#pay")
    page.wait_for_url(re.compile(r"/credits/purchase-complete\?"))
    expect(page.locator("#notice")).to_contain_text("completed")
    live_app.settle()
    page.reload()
    expect(page.locator("#recharge-card")).to_have_text("A card is saved for it.")

    page.check("#recharge-enabled")
    page.fill("#recharge-threshold", "200")
    page.select_option("#recharge-pack", "starter")
    page.click("#recharge-save")
    expect(page.locator("#recharge-state")).to_have_text(
        "On: when the balance falls below 200 credits, buy 500 credits for $5.00."
    )
    expect(page.locator("#recharge-error")).to_be_empty()
    screenshot("recharge-on")
    with live_app.api(key) as api:
        settings = api.get("/v1/card/auto-recharge").json()
    assert (settings["enabled"], settings["threshold_credits"], settings["pack"]) == (True, 200, "starter")


def test_polling_stops_when_nobody_is_there_and_resumes_on_a_key(page: Page, live_app: LiveApp) -> None:
    account_id = _customer_with_grants(live_app, 1)
    page.clock.install()
    _open_credits(page, live_app, account_id)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/v1/balance" in request.url else None)

    def step(milliseconds: int) -> int:
        """Move the page's clock on (the page's own work, such as a fetch, goes on in real time between steps);
        the balance polls asked so far."""
        page.clock.run_for(milliseconds)
        page.evaluate("() => null")  # a round trip: the requests the timers started have been reported
        return len(asked)

    def step_until_polled(what: str) -> None:
        before = len(asked)
        for _ in range(200):
            if step(1_000) > before:
                return
        raise AssertionError(f"no poll {what}")

    for _ in range(3):
        step_until_polled("while someone is there")
    # Nobody touches anything for 20 minutes of the page's time: polling stops after 10.
    counts = [step(30_000) for _ in range(40)]
    assert counts[-1] > counts[0], "it polled for a while"
    assert len(set(counts[-15:])) == 1, f"an unattended tab keeps polling (and renewing its session): {counts}"

    page.keyboard.press("Shift")
    step_until_polled("after a key")
