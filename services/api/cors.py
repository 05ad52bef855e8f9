"""CORS for the credits widget: a platform's page (another origin) calls the /v1 API from the browser.

Only the API answers CORS, and only for the origins in ``widget_origins`` (in development and test, with none
listed, any ``http://127.0.0.1`` or ``http://localhost`` port). Credentials are never allowed: the widget sends a
bearer token in ``Authorization`` (a customer session), never a cookie, so a page of another origin cannot make a
request on anyone's behalf (no CSRF). Pages, the widget's own files and everything else stay same-origin.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from services.core.settings import Settings

API_PREFIX = "/v1/"
# What the widget sends: its token, a JSON body, a fresh idempotency key per purchase, and a request id.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id")
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
EXPOSED_HEADERS = ("Idempotent-Replayed", "X-Request-Id")
# Development and test only, when no origin is listed: local pages on any port.
LOOPBACK_ORIGINS = r"http://(127\.0\.0\.1|localhost)(:[0-9]{1,5})?"
PREFLIGHT_MAX_AGE_SECONDS = 600


def allowed_origins(settings: Settings) -> tuple[list[str], str | None]:
    """The origins listed, and a pattern of more (the loopback ones, in development and test with none listed)."""
    if settings.widget_origins:
        return list(settings.widget_origins), None
    if settings.environment in ("development", "test"):
        return [], LOOPBACK_ORIGINS
    return [], None


class ApiCors:
    """Starlette's CORSMiddleware around the API's paths only; every other path passes by it untouched."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        origins, pattern = allowed_origins(settings)
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_origin_regex=pattern,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(API_PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
