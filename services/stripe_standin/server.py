"""Starting the stand-in: uvicorn in a thread on a local port, the webhook sender, and a timer that expires
Checkout Sessions whose time has passed (sending ``checkout.session.expired``).

With a ``state_path`` (development keeps it in ``.run/``), its objects, events and keys are saved there as they
change and taken up again at the next start, so a purchase begun before a restart can still be paid and read back.

It refuses to start outside the development and test environments, so that no deployment can take test payments
for real ones.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import uvicorn

from chain.node import free_port
from services.stripe_standin.api import create_standin_app
from services.stripe_standin.errors import StandinRefused
from services.stripe_standin.store import Store
from services.stripe_standin.webhooks import WebhookSender

ALLOWED_ENVIRONMENTS = ("development", "test")
START_TIMEOUT_SECONDS = 15.0


def refuse_outside_development(environment: str) -> None:
    if environment not in ALLOWED_ENVIRONMENTS:
        raise StandinRefused(
            f"the local stand-in for Stripe runs only in development or test, not in {environment!r}; "
            "set CREDITRAIL_STRIPE_SECRET_KEY to a real Stripe key instead",
            environment=environment,
        )


def generate_secret_key() -> str:
    return f"sk_test_standin_{secrets.token_hex(16)}"


def generate_webhook_secret() -> str:
    return f"whsec_standin_{secrets.token_hex(16)}"


@dataclass
class StandinConfig:
    environment: str
    host: str = "127.0.0.1"
    port: int | None = None
    secret_key: str = field(default_factory=generate_secret_key)
    webhook_secret: str = field(default_factory=generate_webhook_secret)
    webhook_url: str | None = None
    api_version: str = "2026-10-28.endive"
    webhook_backoff_initial_seconds: float = 1.0
    webhook_backoff_max_seconds: float = 60.0
    webhook_max_attempts: int = 10
    expiry_check_seconds: float = 1.0
    state_path: Path | None = None


class StripeStandin:
    """A running stand-in. Use :func:`start_standin`, then :meth:`stop` (or use it as a context manager)."""

    def __init__(self, config: StandinConfig) -> None:
        refuse_outside_development(config.environment)
        saved = _load_state(config.state_path) if config.state_path is not None else None
        if saved is not None:
            config = replace(config, secret_key=saved["secret_key"], webhook_secret=saved["webhook_secret"])
        self.config = config
        # The same port as before a restart when it is still free, so the checkout URLs handed out stay valid.
        saved_port = int(saved.get("port") or 0) if saved is not None else 0
        self.port = config.port or (saved_port if saved_port and _port_free(config.host, saved_port) else 0)
        self.port = self.port or free_port(config.host)
        self.sender = WebhookSender(
            config.webhook_url,
            config.webhook_secret,
            backoff_initial_seconds=config.webhook_backoff_initial_seconds,
            backoff_max_seconds=config.webhook_backoff_max_seconds,
            max_attempts=config.webhook_max_attempts,
        )
        self.store = Store(api_version=config.api_version, on_event=self.sender.enqueue)
        if saved is not None:
            self.store.restore(saved["store"])
        self._saved_marker = self.store.change_marker()
        self.app = create_standin_app(self.store, [config.secret_key])
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host=config.host, port=self.port, log_level="warning", lifespan="off")
        )
        self._server_thread: threading.Thread | None = None
        self._timer_thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def start(self) -> StripeStandin:
        self.sender.start()
        self._server_thread = threading.Thread(target=self._server.run, name="stripe-standin", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._server_thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local stand-in for Stripe did not start on {self.url}")
            self._stopping.wait(0.02)
        self._timer_thread = threading.Thread(target=self._expire_loop, name="stripe-standin-expiry", daemon=True)
        self._timer_thread.start()
        return self

    def _expire_loop(self) -> None:
        while not self._stopping.wait(self.config.expiry_check_seconds):
            self.store.expire_due()
            self.save()

    def save(self) -> None:
        """Write the state to ``state_path`` (when set) if it changed since the last write."""
        path = self.config.state_path
        marker = self.store.change_marker()
        if path is None or marker == self._saved_marker:
            return
        state = {
            "port": self.port,
            "secret_key": self.config.secret_key,
            "webhook_secret": self.config.webhook_secret,
            "store": self.store.snapshot(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, path)
        self._saved_marker = marker

    def stop(self) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
        if self._timer_thread is not None:
            self._timer_thread.join(timeout=10)
        self.sender.stop()
        self.save()

    def __enter__(self) -> StripeStandin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _load_state(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def start_standin(config: StandinConfig) -> StripeStandin:
    """Start a stand-in (refused outside development and test); returns it running."""
    return StripeStandin(config).start()
