"""A receipt's signed link opened in Chromium with no session: the page shows the receipt under its strict
Content-Security-Policy (its style and its one script load, nothing is refused) and the Print button prints."""

from __future__ import annotations

from playwright.sync_api import ConsoleMessage, Page, expect

from services.core.db import unit_of_work
from services.ledger import repository as ledger_repo
from services.ledger.minting import mint
from services.ledger.models import Rail
from services.ledger.system_accounts import SystemAccount
from services.outbox.links import receipt_url
from services.outbox.receipts import receipt_number
from tests.browser.conftest import LiveApp, Screenshot


def test_the_signed_link_opens_the_receipt_and_its_print_button_prints(
    page: Page, live_app: LiveApp, screenshot: Screenshot
) -> None:
    account_id, _key = live_app.customer()
    with unit_of_work(live_app.engine) as session:
        minted = mint(
            session,
            account_id=account_id,
            amount_credits=2_500,
            rail=Rail.CARD,
            external_ref="cs_test_browser",
            funding_account_id=SystemAccount.FUNDING_CARD,
            cost_basis_cents=2_500,
            details={"pack": "pro"},
        )
        lot = ledger_repo.get_lot(session, minted.lot_id)
        assert lot is not None
        credited_at = lot.credited_at
    number = receipt_number(minted.lot_id, credited_at)
    url = receipt_url(live_app.settings, account_id, number)
    assert "?sig=" in url
    console: list[ConsoleMessage] = []
    page.on("console", lambda message: console.append(message))
    # Chromium's print dialog cannot be driven; the page's own window.print is watched instead.
    page.add_init_script("window.print = () => { window.__printed = (window.__printed || 0) + 1; };")

    response = page.goto(url)
    assert response is not None
    assert response.status == 200
    expect(page.locator("h1")).to_have_text(f"Receipt {number}")
    expect(page.locator("table")).to_contain_text("$25.00 by card")
    # The inline style applied (allowed by its hash): the table spans the body's width, its rows are ruled.
    assert page.evaluate("getComputedStyle(document.querySelector('table')).borderCollapse") == "collapse"
    screenshot("receipt")
    page.get_by_role("button", name="Print").click()
    page.wait_for_function("window.__printed === 1")
    refused = [message.text for message in console if "Content Security Policy" in message.text]
    assert refused == []

    # Without the signature the same address is not found.
    missing = page.goto(url.split("?", 1)[0])
    assert missing is not None
    assert missing.status == 404
