"""Every public URL comes from the one base URL: configured, or the API's own address in development."""

from __future__ import annotations

from services.core.settings import Settings
from services.core.urls import (
    credits_page_url,
    public_base_url,
    public_url,
    purchase_cancelled_url,
    purchase_complete_url,
)


def test_development_base_url_is_the_apis_own_address() -> None:
    assert public_base_url(Settings()) == "http://127.0.0.1:8000"
    assert public_base_url(Settings(api_host="localhost", api_port=9100)) == "http://localhost:9100"
    # Binding every interface is no address to hand out: the local one stands in for it.
    assert public_base_url(Settings(api_host="0.0.0.0", api_port=8001)) == "http://127.0.0.1:8001"  # noqa: S104
    assert public_base_url(Settings(api_host="::1", api_port=8001)) == "http://[::1]:8001"


def test_the_configured_base_url_wins_and_keeps_its_path_prefix() -> None:
    settings = Settings(public_base_url="https://example.com/billing", api_port=9100)
    assert credits_page_url(settings) == "https://example.com/billing/credits"
    assert public_url(settings, "/receipts/7") == "https://example.com/billing/receipts/7"


def test_checkout_return_urls_keep_stripes_session_placeholder() -> None:
    settings = Settings(public_base_url="https://credits.example.com")
    success = purchase_complete_url(settings, {"purchase_id": "12", "session_id": "{CHECKOUT_SESSION_ID}"})
    assert success == (
        "https://credits.example.com/credits/purchase-complete?purchase_id=12&session_id={CHECKOUT_SESSION_ID}"
    )
    cancel = purchase_cancelled_url(settings, {"purchase_id": "12"})
    assert cancel == "https://credits.example.com/credits/purchase-cancelled?purchase_id=12"
