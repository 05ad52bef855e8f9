"""Browser tests: Debian's Chromium driven by Playwright, and the real app served over HTTP.

- ``browser``: one Chromium per test module (``/usr/bin/chromium``, installed by scripts/setup; Playwright's own
  browser download is never used). Not per session: Playwright's sync API keeps an event loop marked running in
  the main thread while it is started, which would break later tests that run their own (``asyncio.run``).
  ``page``: a fresh context and page per test, with bounded timeouts.
- ``screenshot``: saves the page under the test's ``tmp_path`` (numbered, named by state).
- ``live_app``: the API served by uvicorn on a free port over a SQLite file, with the Stripe stand-in wired in as
  in development (services.dev.start_dev_stripe) and webhooks processed inline, as configured by default.
  ``make_live_app(**settings)``: the same with more settings (a USDC chain, say).
- ``deep_focus``: the id of the element holding the keyboard's focus, inside the widget's shadow root if there.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, sync_playwright
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from chain.node import free_port
from services.apikeys.service import issue_key
from services.app.app import create_app
from services.card.flows.inbox import InlineProcessor
from services.core.db import make_engine, unit_of_work
from services.core.settings import Settings
from services.dev import start_dev_stripe
from services.ledger.accounts import create_customer_account
from services.stripe_standin.server import StripeStandin

CHROMIUM = Path("/usr/bin/chromium")
PAGE_TIMEOUT_MS = 15_000
START_TIMEOUT_SECONDS = 15.0
WAIT_SECONDS = 15.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Chromium is missing: scripts/setup installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-background-networking"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


Screenshot = Callable[[str], Path]


@pytest.fixture
def screenshot(page: Page, tmp_path: Path) -> Screenshot:
    counter = itertools.count(1)
    folder = tmp_path / "screenshots"
    folder.mkdir()

    def take(state: str) -> Path:
        path = folder / f"{next(counter):02d}-{state}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """The condition's first truthy value, polled until the deadline (then the test fails, saying what)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class LiveApp:
    url: str
    app: FastAPI
    engine: Engine
    settings: Settings
    standin: StripeStandin

    def customer(self, name: str = "browser customer") -> tuple[int, str]:
        """A customer account and its API key."""
        with unit_of_work(self.engine) as session:
            account_id = create_customer_account(session, name=name)
            issued = issue_key(session, role="customer", account_id=account_id)
        return account_id, issued.key

    def customer_session(self, account_id: int, **body: Any) -> dict[str, Any]:
        """A customer session for ``account_id``, asked for as the platform's backend would (a platform key)."""
        with unit_of_work(self.engine) as session:
            platform = issue_key(session, role="platform", account_id=None, name="platform backend")
        with self.api(platform.key) as api:
            response = api.post("/v1/admin/customer-sessions", json={"account_id": account_id, **body})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def webhooks_settled(self) -> bool:
        """Every event the stand-in recorded has been delivered (and so processed: the API answers a webhook after
        it stored the event, and processes it inline right after)."""
        sender = self.standin.sender
        delivered = {a.event_id for a in sender.attempts if a.delivered}
        recorded = {event["id"] for event in self.standin.store.events}
        return sender.pending() == 0 and recorded <= delivered

    def settle(self) -> None:
        """Wait until every event so far has been delivered to the API and processed there."""
        wait_until(self.webhooks_settled, "the stand-in's webhooks to be delivered")
        processor = getattr(self.app.state, "card_processor", None)
        if isinstance(processor, InlineProcessor):
            processor.wait_idle()


@contextmanager
def serve_live_app(sqlite_template: Path, folder: Path, **values: Any) -> Iterator[LiveApp]:
    """The app served over HTTP on a copy of the migrated SQLite template in ``folder``, with ``values`` added to
    its settings."""
    database = folder / "creditrail.db"
    shutil.copyfile(sqlite_template, database)
    engine = make_engine(f"sqlite:///{database}")
    port = free_port()
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{database}",
        api_host="127.0.0.1",
        api_port=port,
        receipt_link_secret=SecretStr("receipt-links-browser-0123456789abcdef0123"),
        **values,
    )
    settings, standin = start_dev_stripe(settings, api_host="127.0.0.1", api_port=port)
    assert standin is not None
    app = create_app(settings, engine=engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="creditrail-api", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the API to start", START_TIMEOUT_SECONDS)
        assert server.started, "the API did not start"
        yield LiveApp(f"http://127.0.0.1:{port}", app, engine, settings, standin)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        standin.stop()
        engine.dispose()


@pytest.fixture
def live_app(sqlite_template: Path, tmp_path: Path) -> Iterator[LiveApp]:
    with serve_live_app(sqlite_template, tmp_path) as app:
        yield app


MakeLiveApp = Callable[..., LiveApp]


@pytest.fixture
def make_live_app(sqlite_template: Path, tmp_path: Path) -> Iterator[MakeLiveApp]:
    """``make_live_app(**settings)``: the live app with more settings (one per test)."""
    with ExitStack() as stack:

        def make(**values: Any) -> LiveApp:
            return stack.enter_context(serve_live_app(sqlite_template, tmp_path, **values))

        yield make


DEEP_FOCUS_JS = """() => {
  let active = document.activeElement;
  while (active && active.shadowRoot && active.shadowRoot.activeElement) active = active.shadowRoot.activeElement;
  return active ? active.id || active.getAttribute("aria-label") || active.textContent.trim() : null;
}"""


def deep_focus(page: Page) -> str | None:
    """The id (else the label or text) of the element the keyboard is on, looking inside shadow roots."""
    found: str | None = page.evaluate(DEEP_FOCUS_JS)
    return found


FOCUS_RING_JS = """() => {
  let active = document.activeElement;
  while (active && active.shadowRoot && active.shadowRoot.activeElement) active = active.shadowRoot.activeElement;
  const style = getComputedStyle(active);
  return style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
}"""


def focus_is_visible(page: Page) -> bool:
    """Whether the focused element (inside shadow roots too) draws a focus ring of 2 px or more."""
    return bool(page.evaluate(FOCUS_RING_JS))


def tab_to(page: Page, target: Callable[[str | None], bool], what: str, max_presses: int = 150) -> str:
    """Press Tab until the focused element satisfies ``target`` (by its id/label); returns it."""
    for _ in range(max_presses):
        page.keyboard.press("Tab")
        focused = deep_focus(page)
        if target(focused):
            assert focused is not None
            return focused
    raise AssertionError(f"Tab never reached {what}")


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
