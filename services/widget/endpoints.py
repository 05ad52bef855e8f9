"""The customer's credits page (/credits) and the credits widget (/widget.js, /widget.css) it is made of.

One component, ``<creditrail-credits>`` (``static/credits.js``, its stylesheet ``static/credits.css``): a platform
puts it in its top bar (``mode="badge"``: the balance, and a panel on click), and /credits shows the same panel at
full width (``mode="page"``). The page is opened from the platform's link with a customer session in the URL's
fragment (``/credits#session=crs_...``: never sent to a server, nor in a Referer); the component takes the token,
wipes it from the address bar and keeps it for the tab (sessionStorage). Stripe's success and cancel URLs point
here too (services.core.urls), and the page confirms the purchase on return.

The page carries no inline script or style, so its Content-Security-Policy allows only this origin's files. The
widget's files are not fingerprinted, so they are cached briefly (and revalidated by ETag). In development and test,
/dev/widget-demo is a platform's page in miniature: a top bar with the widget, signed in from its own fragment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.core.errors import NotFound
from services.core.settings import Settings
from services.core.urls import CREDITS_PAGE_PATH, PURCHASE_CANCELLED_PATH, PURCHASE_COMPLETE_PATH, public_base_url

router = APIRouter(tags=["pages"], include_in_schema=False)

STATIC = Path(__file__).parent / "static"
WIDGET_SCRIPT_PATH = "/widget.js"
WIDGET_STYLE_PATH = "/widget.css"
WIDGET_DEMO_PATH = "/dev/widget-demo"
WIDGET_DEMO_SCRIPT_PATH = "/dev/widget-demo.js"
# Not fingerprinted: a short cache, then a revalidation (304 when unchanged).
ASSET_CACHE_CONTROL = "public, max-age=300"

# Only this origin's scripts, styles and API; no plugin, no frame around it, no base or form elsewhere.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class _Asset:
    """A static file read once, with its ETag."""

    def __init__(self, name: str, media_type: str) -> None:
        self.body = (STATIC / name).read_bytes()
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = {
            "ETag": self.etag,
            "Cache-Control": ASSET_CACHE_CONTROL,
            "X-Content-Type-Options": "nosniff",
            # Platforms' pages load it from another origin (even those isolating themselves with COEP).
            "Cross-Origin-Resource-Policy": "cross-origin",
        }
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


_SCRIPT = _Asset("credits.js", "text/javascript; charset=utf-8")
_STYLE = _Asset("credits.css", "text/css; charset=utf-8")
_DEMO_SCRIPT = _Asset("widget-demo.js", "text/javascript; charset=utf-8")
_PAGE = (STATIC / "credits.html").read_text(encoding="utf-8")
_DEMO = (STATIC / "widget-demo.html").read_text(encoding="utf-8")


def _base_path(settings: Settings) -> str:
    """The public base URL's path ("" or "/billing"): the page's files are under it, on this origin."""
    return urlsplit(public_base_url(settings)).path.rstrip("/")


@router.get(CREDITS_PAGE_PATH, response_class=HTMLResponse)
@router.get(PURCHASE_COMPLETE_PATH, response_class=HTMLResponse)
@router.get(PURCHASE_CANCELLED_PATH, response_class=HTMLResponse)
def credits_page(request: Request) -> HTMLResponse:
    html = _PAGE.replace("{base_path}", _base_path(request.app.state.settings))
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get(WIDGET_SCRIPT_PATH)
def widget_script(request: Request) -> Response:
    return _SCRIPT.response(request)


@router.get(WIDGET_STYLE_PATH)
def widget_style(request: Request) -> Response:
    return _STYLE.response(request)


class DemoNotServed(NotFound):
    code = "not_found"


def _demo_allowed(settings: Settings) -> None:
    if settings.environment not in ("development", "test"):
        raise DemoNotServed("the widget demo is served in development only")


@router.get(WIDGET_DEMO_PATH, response_class=HTMLResponse)
def widget_demo(request: Request) -> HTMLResponse:
    """A platform's page in miniature, with the widget in its top bar: the widget comes from the public base URL,
    so opening this page on another host name (localhost rather than 127.0.0.1) runs it cross-origin, as on a
    platform. Its own script signs the widget in from the fragment (#session=crs_...)."""
    settings: Settings = request.app.state.settings
    _demo_allowed(settings)
    base = public_base_url(settings)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base))
    csp = (
        f"default-src 'none'; script-src 'self' {origin}; style-src 'self' {origin}; connect-src {origin}; "
        f"img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    html = _DEMO.replace("{base}", base)
    return HTMLResponse(html, headers={**PAGE_HEADERS, "Content-Security-Policy": csp})


@router.get(WIDGET_DEMO_SCRIPT_PATH)
def widget_demo_script(request: Request) -> Response:
    _demo_allowed(request.app.state.settings)
    return _DEMO_SCRIPT.response(request)
