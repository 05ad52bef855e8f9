"""The request guard: what every HTTP request passes before the app reads a byte of its body.

1. Authentication first. A route that needs an API key (any of its dependencies authenticates) gets the key checked
   here, in a short unit of work of its own, before the body is read: an unauthenticated caller is answered 401
   whatever it sends, and never makes the server read, buffer or parse a body. The principal found is left in the
   request's scope for the endpoint's dependencies (``services.api.deps``), so the key is looked up once. A
   customer session (a ``crs_...`` bearer token) is renewed here as it is used, and refused (403
   ``forbidden_for_session``) on a route none of whose dependencies lets sessions in.
   A request signed by a wallet (no key, and headers the app's ``SignedRequests`` recognises: services.api.principal,
   implemented by services.wallets) signs its body's digest, so it cannot be checked before the body is read: its
   headers' form and its timestamp window are checked first (no database, no body), then the body is read under the
   same cap as any other (2.), then the signature is verified and the nonce spent, in a short unit of work of its
   own, before the app sees a byte of it.
2. A size cap on every body (``api_max_body_bytes``): a declared ``Content-Length`` above it is refused at once; a
   body of unknown length (chunked) is counted while it is read and cut at the cap. Either way 413.
3. A JSON body FastAPI will parse (a route with a body, a JSON content type or none) must be UTF-8 and nested no
   deeper than ``api_max_json_depth``, checked on the raw bytes before ``json.loads`` sees them: the decoder
   recurses once per level, and a deep enough document overflows the C stack (a dependency raises Python's
   recursion limit far above what the stack holds, so no RecursionError comes first). 422 ``malformed_json`` or
   ``json_too_deep``.

The body read here is handed to the app unchanged; the Stripe webhook keeps its own, smaller cap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.deps import AUTHENTICATING_DEPENDENCIES, PRINCIPAL_SCOPE_KEY, SESSION_DEPENDENCIES, api_key_of
from services.api.errors import database_unavailable_response, error_body
from services.api.principal import (
    SESSION_REFUSED_MESSAGE,
    ForbiddenForSession,
    Principal,
    SignedRequest,
    keys_of,
    signed_requests_of,
)
from services.api.routes import api_routes
from services.core.clock import utcnow
from services.core.db import is_database_unavailable, unit_of_work
from services.core.errors import CreditrailError

# A complete JSON string (escapes included): its brackets are text, not structure.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_OPENERS = frozenset(b"[{")


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``max_depth``, from a scan of its bytes
    (brackets inside strings are not counted; an unterminated string counts what follows it, which only errs
    towards refusing a document that is malformed anyway)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, delete=_NOT_BRACKETS)
    depth = 0
    for char in brackets:
        if char in _OPENERS:
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
            if depth < 0:  # a stray closer: the decoder stops there without recursing
                return False
    return False


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this content type as JSON (it does when there is none)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _depends_on(route: APIRoute, calls: tuple[Any, ...]) -> bool:
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call in calls:
            return True
        stack.extend(dependant.dependencies)
    return False


def route_needs_key(route: APIRoute) -> bool:
    """Whether any of the route's dependencies authenticates an API key (or a customer session)."""
    return _depends_on(route, AUTHENTICATING_DEPENDENCIES)


def route_allows_session(route: APIRoute) -> bool:
    """Whether the route lets a customer session in (one of its dependencies says so: services.api.deps)."""
    return _depends_on(route, SESSION_DEPENDENCIES)


@dataclass(frozen=True, slots=True)
class _Policy:
    # Whether the route authenticates an API key, and whether FastAPI parses its body as JSON (a route that reads
    # its body itself, like Stripe's webhook, checks it its own way).
    needs_key: bool
    parses_json: bool
    # Whether a customer session may call it (else it is refused, 403, before the body is read).
    allows_session: bool = False


_NO_ROUTE = _Policy(needs_key=False, parses_json=False)


class _BodyTooLarge(Exception):
    """The body went past the cap while it was read."""


class _Disconnected(Exception):
    """The client went away before its body was read."""


class RequestGuard:
    """Pure ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self._policies: dict[int, _Policy] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        policy = self._policy(scope)
        signed: SignedRequest | None = None
        signed_requests = signed_requests_of(scope["app"]) if policy.needs_key else None
        if signed_requests is not None and api_key_of(headers) is None and signed_requests.is_signed(headers):
            try:
                signed = signed_requests.precheck(headers, now=utcnow())
            except CreditrailError as exc:
                await self._refuse(scope, receive, send, exc.status_code, exc.code, exc.message, exc.details)
                return
        elif policy.needs_key and not await self._authenticated(
            scope, receive, send, self._authenticate, headers, policy.allows_session
        ):
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)
            return
        except _Disconnected:
            return
        if signed is not None and not await self._authenticated(
            scope, receive, send, self._authenticate_wallet, signed, body
        ):
            return
        if body and policy.parses_json and _is_json(headers.get("content-type")):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                await self._refuse(scope, receive, send, 422, "malformed_json", "the request body is not UTF-8")
                return
            if json_depth_exceeds(body, self.max_json_depth):
                await self._refuse(
                    scope,
                    receive,
                    send,
                    422,
                    "json_too_deep",
                    f"the request body nests deeper than {self.max_json_depth} levels",
                    {"max_depth": self.max_json_depth},
                )
                return
        await self.app(scope, _replay(body, receive), send)

    def _policy(self, scope: Scope) -> _Policy:
        app = scope.get("app")
        if app is None:
            return _NO_ROUTE
        path, method = scope["path"], scope["method"]
        for entry in api_routes(app):
            if method in entry.methods and entry.matches_path(path):
                policy = self._policies.get(id(entry.route))
                if policy is None:
                    policy = _Policy(
                        route_needs_key(entry.route),
                        entry.route.body_field is not None,
                        route_allows_session(entry.route),
                    )
                    self._policies[id(entry.route)] = policy
                return policy
        return _NO_ROUTE

    async def _authenticated(
        self, scope: Scope, receive: Receive, send: Send, authenticate: Callable[..., Principal], *args: Any
    ) -> bool:
        """Run ``authenticate(scope, *args)`` in a worker thread and leave its principal in the request's scope;
        whether it succeeded (else the refusal was sent)."""
        try:
            scope[PRINCIPAL_SCOPE_KEY] = await run_in_threadpool(authenticate, scope, *args)
        except CreditrailError as exc:
            await self._refuse(scope, receive, send, exc.status_code, exc.code, exc.message, exc.details)
            return False
        except DBAPIError as exc:
            if not is_database_unavailable(exc):
                raise
            response = database_unavailable_response(scope["method"], scope["path"], exc)
            await response(scope, receive, send)
            return False
        return True

    @staticmethod
    def _authenticate_wallet(scope: Scope, signed: SignedRequest, body: bytes) -> Principal:
        """A wallet-signed request's principal: the signature over the request as received, then the nonce spent."""
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        path_and_query = (raw_path + b"?" + query if query else raw_path).decode("latin-1")
        signed.verify(method=scope["method"], path_and_query=path_and_query, body=body)
        with unit_of_work(scope["app"].state.engine) as session:
            return signed.authenticate(session, now=utcnow())

    @staticmethod
    def _authenticate(scope: Scope, headers: dict[str, str], allows_session: bool) -> Principal:
        with unit_of_work(scope["app"].state.engine) as session:
            principal = keys_of(scope["app"]).authenticate(session, api_key_of(headers))
            if principal.is_session and not allows_session:
                # Refused inside the unit of work: a session's renewal is not written for a request it may not make.
                raise ForbiddenForSession(SESSION_REFUSED_MESSAGE)
            return principal

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(
            scope,
            receive,
            send,
            413,
            "payload_too_large",
            f"a request body is at most {self.max_body_bytes} bytes",
            {"max_bytes": self.max_body_bytes},
        )

    @staticmethod
    async def _refuse(
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        response_headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        # The body was not (all) read: the server closes the connection after this answer.
        response = JSONResponse(error_body(code, message, details), status_code=status, headers=response_headers)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the body already read, then listens to the client as before."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
