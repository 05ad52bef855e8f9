"""The offline Stripe of the card tests (tests/card/stripe_fake.py) served over HTTP on a free local port, so that
an API or worker running as a process of its own reaches it through its real Stripe client
(``CREDITRAIL_STRIPE_API_BASE`` pointed here).

Each request is answered by :meth:`FakeStripe.request` exactly as the in-process tests are, one at a time (a lock
serialises the fake's state between the server's threads and the test, which pays sessions and emits events
through :meth:`StripeServer.locked`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from chain.node import free_port
from tests.card.stripe_fake import FakeStripe


class StripeServer:
    def __init__(self) -> None:
        self.fake = FakeStripe()
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stripe-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[FakeStripe]:
        """The fake, with no request being answered meanwhile."""
        with self._lock:
            yield self.fake

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[str, int, Any]:
        with self._lock:
            return self.fake.request(method, f"{self.url}{path}", headers, body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    text, status, headers = server._answer(self.command, self.path, dict(self.headers.items()), body)
                except Exception as exc:  # a fault the fake was told to raise ("timeout"): drop the connection
                    self.close_connection = True
                    self.send_error(599, type(exc).__name__)
                    return
                payload = text.encode()
                self.send_response(status)
                for name, value in dict(headers).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve  # noqa: N815 - the names http.server dispatches to
            do_POST = _serve  # noqa: N815
            do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    def start(self) -> StripeServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> StripeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
