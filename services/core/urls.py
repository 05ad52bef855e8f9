"""Every public URL creditrail hands out, built from one base: ``CREDITRAIL_PUBLIC_BASE_URL``.

Checkout's success and cancel pages, the credits page link, and any link a later feature hands out (a receipt, an
email) come from here, so a deployment behind a proxy, on another host or under a path prefix changes one setting.
In development the base defaults to the API's own address (``http://{api_host}:{api_port}``, which ``creditrail
run --port`` and ``creditrail dev --port`` set); production requires an https base (services.core.settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from services.core.settings import Settings

CREDITS_PAGE_PATH = "/credits"
PURCHASE_COMPLETE_PATH = "/credits/purchase-complete"
PURCHASE_CANCELLED_PATH = "/credits/purchase-cancelled"

# Addresses that bind every interface are no address to hand out: the local one stands in for them.
_ANY_INTERFACE = {"", "0.0.0.0", "::"}  # noqa: S104 - compared with, never bound


def public_base_url(settings: Settings) -> str:
    """The configured base (no trailing slash), or the API's own address when none is configured."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = "127.0.0.1" if settings.api_host in _ANY_INTERFACE else settings.api_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def public_url(settings: Settings, path: str, query: Mapping[str, str] | None = None, *, safe: str = "") -> str:
    """``path`` (absolute, starting with /) under the public base, with ``query`` encoded (``safe``: characters
    kept as they are, such as Stripe's ``{CHECKOUT_SESSION_ID}`` braces)."""
    if not path.startswith("/"):
        raise ValueError(f"a public path starts with '/': {path!r}")
    url = public_base_url(settings) + path
    return f"{url}?{urlencode(query, safe=safe)}" if query else url


def credits_page_url(settings: Settings) -> str:
    return public_url(settings, CREDITS_PAGE_PATH)


def purchase_complete_url(settings: Settings, query: Mapping[str, str] | None = None) -> str:
    """Where Checkout sends the customer after paying (Stripe fills in ``{CHECKOUT_SESSION_ID}`` itself)."""
    return public_url(settings, PURCHASE_COMPLETE_PATH, query, safe="{}")


def purchase_cancelled_url(settings: Settings, query: Mapping[str, str] | None = None) -> str:
    return public_url(settings, PURCHASE_CANCELLED_PATH, query)


def outside_url_problem(settings: Settings, url: str, *, max_length: int) -> str | None:
    """What is wrong with a URL someone outside gives us to send people or requests to (a page to return to, a
    webhook endpoint), or None: it must be absolute http(s) (https in production), printable ASCII, at most
    ``max_length`` characters, with a host and no credentials in it."""
    if len(url) > max_length or not (url.isascii() and url.isprintable()):
        return f"must be at most {max_length} printable ASCII characters"
    schemes = ("https",) if settings.environment == "production" else ("http", "https")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        credentials = parts.username or parts.password
    except ValueError:
        return f"must be an absolute {' or '.join(schemes)} URL"
    if parts.scheme not in schemes or not host or credentials:
        return f"must be an absolute {' or '.join(schemes)} URL without credentials"
    return None
