"""A small HTTP server in front of a real node (anvil) that, on command, answers as a failing RPC provider does:
HTTP 500s, garbage instead of JSON, JSON cut in half, or no answer at all until the client gives up.

It listens on a free 127.0.0.1 port and accepts any path (``/v3/<key>``, as providers put their key there).
"""

from __future__ import annotations

import threading
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import requests


class Fault(StrEnum):
    NONE = "none"  # forward to the node
    HTTP_500 = "http_500"
    GARBAGE = "garbage"  # 200 with a body that is not JSON
    TRUNCATED = "truncated"  # the node's answer, cut in half
    HANG = "hang"  # no answer until released (or the server stops)


class FaultyNode:
    """Use as a context manager; ``url(path)`` is its address; ``fault`` says how it answers now."""

    def __init__(self, upstream: str | None) -> None:
        self.upstream = upstream
        self.fault = Fault.NONE
        # With n > 1, only every n-th request gets the fault (an intermittent provider); the others are forwarded.
        self.every = 1
        self.requests = 0
        self.faulty_answers = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-node", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, fault: Fault, *, every: int = 1) -> None:
        self.every = every
        self.fault = fault
        if fault != Fault.HANG:
            self._release.set()
        else:
            self._release.clear()

    def __enter__(self) -> FaultyNode:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with node._lock:
                    node.requests += 1
                    fault = node.fault if node.requests % node.every == 0 else Fault.NONE
                    if fault != Fault.NONE:
                        node.faulty_answers += 1
                if fault == Fault.HANG:
                    node._release.wait(30)
                    self.close_connection = True
                    return
                if fault == Fault.HTTP_500:
                    self._answer(500, b"<html>internal error</html>", "text/html")
                    return
                if fault == Fault.GARBAGE:
                    self._answer(200, b"<html>rate limit page, not JSON</html>", "application/json")
                    return
                if node.upstream is None:
                    self._answer(502, b"no upstream", "text/plain")
                    return
                answer = requests.post(
                    node.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30
                ).content
                if fault == Fault.TRUNCATED:
                    answer = answer[: max(1, len(answer) // 2)]
                self._answer(200, answer, "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
