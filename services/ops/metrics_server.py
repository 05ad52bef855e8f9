"""The worker's ``/metrics``: a small HTTP server on a thread of the worker process (the API serves its own), so the
counters of what the worker's jobs do (lot expiry, the webhook inbox) are scraped too. Off unless
``CREDITRAIL_WORKER_METRICS_PORT`` is set; the same protection as the API's (a bearer token, or public only where
the settings say so)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.engine import Engine

from services.core.errors import CreditrailError
from services.core.settings import Settings
from services.ops.metrics_access import check_metrics_access, database_registry, render_metrics

log = logging.getLogger("creditrail.ops")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds)."""


class _ThreadedServer(WSGIServer):
    daemon_threads = True


def metrics_app(engine: Engine, settings: Settings) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    database = database_registry(engine)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        try:
            check_metrics_access(settings, environ.get("HTTP_AUTHORIZATION"))
        except CreditrailError as exc:
            start_response(f"{exc.status_code} {exc.code}", [("Content-Type", "text/plain")])
            return [f"{exc.message}\n".encode()]
        body = render_metrics(database)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    return app


class MetricsServer:
    """A started server; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_metrics_server(engine: Engine, settings: Settings, *, port: int | None = None) -> MetricsServer | None:
    """Serve ``/metrics`` on ``worker_metrics_host:worker_metrics_port`` (or ``port``) from a daemon thread; None
    when no port is configured."""
    chosen = settings.worker_metrics_port if port is None else port
    if chosen is None:
        return None
    server = make_server(
        settings.worker_metrics_host,
        chosen,
        metrics_app(engine, settings),
        server_class=_ThreadedServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    log.info("worker metrics", extra={"fields": {"host": settings.worker_metrics_host, "port": server.server_port}})
    return MetricsServer(server, thread)
