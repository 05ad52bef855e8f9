"""One log line per HTTP request, and its request id.

A pure ASGI middleware: it never reads the body. The ``X-Request-Id`` header is honoured when it is a sane token
(letters, digits, ``._:-``, at most 128 characters), otherwise an id is generated; either way it is echoed on the
response and added to every log record made while the request is served. The line (``http_request``) carries the
method, the path's template (``/v1/holds/{hold_id}/capture``, never the query string), the status, the duration in
milliseconds and the request id; no header, so no Authorization nor API key. A request that ends in an unhandled
error is logged with status 500 (its response, made by the app's outermost handler, does not carry the id).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.logs import request_id

log = logging.getLogger("creditrail.http")

HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Paths no route matched are logged under this name rather than as sent (anything may be sent).
UNMATCHED = "<unmatched>"


def _given_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER.encode():
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


def _template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not path:
        return UNMATCHED
    root = scope.get("root_path", "")
    return f"{root}{path}"


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _given_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                headers.append((HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The app's last-resort handler (outside every middleware) answers 500 and logs the error after this:
            # the request's id stays set for its line (the request's task ends with it).
            self._log(scope, 500, started, rid)
            raise
        self._log(scope, status, started, rid)
        request_id.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, started: float, rid: str) -> None:
        fields = {
            "method": scope.get("method"),
            "path": _template(scope),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "request_id": rid,
        }
        log.info("http_request", extra={"fields": fields})
