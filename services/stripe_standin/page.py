"""The test checkout page, at each Checkout Session's ``url`` (``/c/pay/<session id>``).

It shows the product and the amount, takes a card number, an expiry and a CVC, and says plainly that it is a local
stand-in, not Stripe. Paying with a test card that pays completes the session and redirects to its success URL
(``{CHECKOUT_SESSION_ID}`` filled in); a declined card shows the decline and the session stays open; a card that
needs authentication asks the customer to confirm first. Cancel returns to the cancel URL, the session still open
(as Checkout's back link does). The page uses no script: plain forms posted back to the stand-in.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.core.money import format_usd
from services.stripe_standin.cards import TEST_CARDS
from services.stripe_standin.errors import StripeApiError
from services.stripe_standin.forms import FormError, decode
from services.stripe_standin.store import CheckoutView, PayOutcome, Store

router = APIRouter(include_in_schema=False)

MAX_FORM_BYTES = 8 * 1024
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action *; base-uri 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f4f7; margin: 0; color: #1a1a2e; }
main { max-width: 420px; margin: 24px auto; background: #fff; border-radius: 8px; padding: 20px 24px;
       box-shadow: 0 1px 4px rgba(0,0,0,.12); }
.banner { background: #fff4cc; border: 1px solid #e0c200; border-radius: 6px; padding: 8px 10px; font-size: 14px; }
h1 { font-size: 18px; margin: 16px 0 4px; }
.amount { font-size: 28px; font-weight: 600; margin: 0 0 16px; }
label { display: block; font-size: 13px; margin: 10px 0 4px; }
input { width: 100%; box-sizing: border-box; padding: 9px; font-size: 16px; border: 1px solid #bbb;
        border-radius: 5px; }
.row { display: flex; gap: 10px; } .row > div { flex: 1; }
button { width: 100%; margin-top: 16px; padding: 11px; font-size: 16px; border: 0; border-radius: 5px;
         background: #4b4bd6; color: #fff; cursor: pointer; }
button.secondary { background: #888; }
.error { color: #b00020; background: #fde7ea; border-radius: 5px; padding: 8px 10px; margin-top: 12px; }
.note { color: #555; font-size: 13px; }
table { font-size: 13px; border-collapse: collapse; margin-top: 6px; } td { padding: 2px 8px 2px 0; }
a { color: #4b4bd6; }
"""


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _amount(view: CheckoutView) -> str:
    if view.currency == "usd":
        return format_usd(view.amount_total_cents)
    return f"{view.amount_total_cents} {view.currency.upper()} (minor units)"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><main>"
        "<p class='banner' id='standin-notice'><strong>Local stand-in for Stripe: this is not Stripe.</strong> "
        "No card is charged and no money moves; use a test card.</p>"
        f"{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=HEADERS)


def _summary(view: CheckoutView) -> str:
    return (
        f"<h1 id='product'>{html.escape(view.product_name)}</h1>"
        f"<p class='amount' id='amount'>{html.escape(_amount(view))}</p>"
    )


def _test_cards() -> str:
    rows = "".join(
        f"<tr><td>{' '.join(card.number[i : i + 4] for i in range(0, 16, 4))}</td>"
        f"<td>{html.escape(card.brand)}</td><td>{html.escape(card.description)}</td></tr>"
        for card in TEST_CARDS.values()
    )
    return f"<p class='note'>Test cards (any future expiry, any CVC):</p><table>{rows}</table>"


def _checkout_form(view: CheckoutView, error: str | None = None, number: str = "") -> str:
    action = f"/c/pay/{html.escape(view.id)}"
    problem = f"<p class='error' id='error' role='alert'>{html.escape(error)}</p>" if error else ""
    saves = "<p class='note'>Your card will be saved for future payments.</p>" if view.saves_card else ""
    cancel = (
        f"<p><a id='cancel' href='/c/pay/{html.escape(view.id)}/cancel'>Cancel and return</a></p>"
        if view.cancel_url
        else ""
    )
    return (
        f"{_summary(view)}"
        f"<form method='post' action='{action}' id='pay-form'>"
        "<label for='cardnumber'>Card number</label>"
        f"<input id='cardnumber' name='cardnumber' inputmode='numeric' autocomplete='off' "
        f"placeholder='4242 4242 4242 4242' value='{html.escape(number)}' required>"
        "<div class='row'><div><label for='exp-date'>Expiry (MM / YY)</label>"
        "<input id='exp-date' name='exp-date' placeholder='MM / YY' autocomplete='off' required></div>"
        "<div><label for='cvc'>CVC</label>"
        "<input id='cvc' name='cvc' inputmode='numeric' placeholder='123' autocomplete='off' required></div></div>"
        f"{problem}{saves}"
        f"<button type='submit' id='pay'>Pay {html.escape(_amount(view))}</button>"
        "</form>"
        f"{cancel}{_test_cards()}"
    )


def _authentication_form(view: CheckoutView) -> str:
    action = f"/c/pay/{html.escape(view.id)}/authenticate"
    return (
        f"{_summary(view)}"
        "<h1>Confirm this payment</h1>"
        "<p id='authentication'>Your bank asks you to confirm this payment (3D Secure, simulated here).</p>"
        f"<form method='post' action='{action}'>"
        "<button type='submit' name='decision' value='approve' id='confirm'>Confirm payment</button>"
        "<button type='submit' name='decision' value='fail' id='fail-authentication' class='secondary'>"
        "Fail authentication</button>"
        "</form>"
    )


def _closed(view: CheckoutView) -> str:
    if view.status == "complete":
        text = "This checkout session has been paid."
    else:
        text = "This checkout session has expired; start the purchase again."
    return f"{_summary(view)}<p id='closed'>{html.escape(text)}</p>"


def _view_or_none(store: Store, session_id: str) -> CheckoutView | None:
    try:
        return store.checkout_view(session_id)
    except StripeApiError:
        return None


def _not_found() -> HTMLResponse:
    return _page("Not found", "<p id='closed'>There is no such checkout session.</p>", status=404)


async def _form(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        return decode(body.decode("utf-8", errors="replace"))
    except FormError:
        return {}


def _text(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    return value[:64] if isinstance(value, str) else ""


@router.get("/c/pay/{session_id}", response_class=HTMLResponse)
def checkout_page(request: Request, session_id: str) -> Response:
    store = _store(request)
    store.expire_due()
    view = _view_or_none(store, session_id)
    if view is None:
        return _not_found()
    if view.status != "open":
        return _page("Checkout", _closed(view))
    if view.awaiting_authentication:
        return _page("Confirm payment", _authentication_form(view))
    return _page("Checkout", _checkout_form(view))


@router.post("/c/pay/{session_id}", response_class=HTMLResponse)
async def pay(request: Request, session_id: str) -> Response:
    store = _store(request)
    store.expire_due()
    form = await _form(request)
    if _view_or_none(store, session_id) is None:
        return _not_found()
    number = _text(form, "cardnumber")
    result = store.pay_checkout(session_id, number=number, expiry=_text(form, "exp-date"), cvc=_text(form, "cvc"))
    view = store.checkout_view(session_id)
    if result.outcome is PayOutcome.PAID and result.redirect_url:
        return RedirectResponse(result.redirect_url, status_code=303)
    if result.outcome is PayOutcome.REQUIRES_ACTION:
        return _page("Confirm payment", _authentication_form(view))
    if result.outcome is PayOutcome.CLOSED:
        return _page("Checkout", _closed(view), status=409)
    return _page("Checkout", _checkout_form(view, result.message, number), status=402)


@router.post("/c/pay/{session_id}/authenticate", response_class=HTMLResponse)
async def authenticate(request: Request, session_id: str) -> Response:
    store = _store(request)
    store.expire_due()
    form = await _form(request)
    if _view_or_none(store, session_id) is None:
        return _not_found()
    result = store.authenticate_checkout(session_id, approve=_text(form, "decision") == "approve")
    view = store.checkout_view(session_id)
    if result.outcome is PayOutcome.PAID and result.redirect_url:
        return RedirectResponse(result.redirect_url, status_code=303)
    if result.outcome is PayOutcome.CLOSED:
        return _page("Checkout", _closed(view), status=409)
    return _page("Checkout", _checkout_form(view, result.message), status=402)


@router.get("/c/pay/{session_id}/cancel")
def cancel(request: Request, session_id: str) -> Response:
    view = _view_or_none(_store(request), session_id)
    if view is None:
        return _not_found()
    if view.cancel_url is None:
        return _page("Checkout", _checkout_form(view))
    return RedirectResponse(view.cancel_url, status_code=303)
