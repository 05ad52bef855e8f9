"""A real HTTP receiver for the platform's webhooks: a threaded ``http.server`` on a free local port that keeps every
request it gets (headers and raw body) and answers as the test says: a status per request in turn, or never (it
holds the connection open until released, to stand for a hanging endpoint)."""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.worker.support import wait_for


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    # The status of each request in turn; once used up, ``default_status``.
    statuses: deque[int] = field(default_factory=deque)
    default_status: int = 200
    answer: bytes = b"ok"
    # Hold every request open, unanswered, until ``release`` is set.
    hang: bool = False


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self.release = threading.Event()
        self.open_requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                    receiver.open_requests += 1
                try:
                    if receiver.behaviour.hang:
                        receiver.release.wait(60)
                        return
                    with receiver._lock:
                        statuses = receiver.behaviour.statuses
                        status = statuses.popleft() if statuses else receiver.behaviour.default_status
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(receiver.behaviour.answer)))
                    self.end_headers()
                    self.wfile.write(receiver.behaviour.answer)
                finally:
                    with receiver._lock:
                        receiver.open_requests -= 1

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The requests received, once there are ``count`` of them."""
        return list(wait_for(lambda: self.received if len(self.received) >= count else None, timeout=timeout))


def refused_url() -> str:
    """A local URL where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"
