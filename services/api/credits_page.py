"""The customer's credits page: balance, lots with their expiry dates, purchases of both rails, recent
transactions, buying a pack (to Stripe Checkout and back) and the USDC deposit address.

A static page, opened from the platform's link with a customer session in the URL's fragment
(``/credits#session=crs_...``: never sent to a server, nor in a Referer). The page takes the token, wipes it from
the address bar (history.replaceState), keeps it for the browser tab only (sessionStorage), and calls the same /v1
endpoints as any client with it; an expired or revoked session shows a message and the link back to the platform.
A developer may paste a customer API key instead. Stripe's success and cancel URLs point here (under the public base
URL: services.core.urls), and the page confirms the purchase on return (the tab still holds the session).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.core.urls import CREDITS_PAGE_PATH, PURCHASE_CANCELLED_PATH, PURCHASE_COMPLETE_PATH

router = APIRouter(tags=["pages"], include_in_schema=False)

PAGE = Path(__file__).parent / "static" / "credits.html"
# The page defines every script and style itself, and talks only to this origin.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get(CREDITS_PAGE_PATH, response_class=HTMLResponse)
@router.get(PURCHASE_COMPLETE_PATH, response_class=HTMLResponse)
@router.get(PURCHASE_CANCELLED_PATH, response_class=HTMLResponse)
def credits_page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=HEADERS)
