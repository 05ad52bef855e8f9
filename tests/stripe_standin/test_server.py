"""Starting the stand-in: only in development and test; wired into development's settings when no Stripe key is
set, and left alone when a real key is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from click.testing import CliRunner
from pydantic import SecretStr

from chain.node import free_port
from services.cli import main
from services.core.settings import Settings, get_settings
from services.core.urls import purchase_complete_url
from services.dev import start_dev_stripe
from services.stripe_standin.errors import StandinRefused
from services.stripe_standin.server import StandinConfig, StripeStandin, start_standin
from tests.stripe_standin.conftest import session_params


def test_standin_refuses_to_start_outside_development() -> None:
    with pytest.raises(StandinRefused) as refused:
        StripeStandin(StandinConfig(environment="production"))
    assert refused.value.code == "stripe_standin_refused"
    assert "development or test" in refused.value.message


def test_development_without_a_key_points_creditrail_at_a_running_standin() -> None:
    settings = Settings(environment="development", api_port=8123)
    assert not settings.stripe_configured

    wired, standin = start_dev_stripe(settings, api_host="0.0.0.0", api_port=8123)  # noqa: S104
    assert standin is not None
    try:
        assert wired.stripe_configured
        assert wired.stripe_api_base == standin.url
        key = wired.stripe_secret_key.get_secret_value()
        assert key.startswith("sk_test_")
        assert [s.get_secret_value() for s in wired.stripe_webhook_secrets] == [standin.config.webhook_secret]
        assert standin.config.webhook_url == "http://127.0.0.1:8123/v1/stripe/webhook"
        # The key works against it through the SDK.
        sdk = stripe.StripeClient(key, base_addresses={"api": wired.stripe_api_base}, max_network_retries=0)
        assert sdk.v1.events.list({"limit": 1}).data == []
    finally:
        standin.stop()


def test_a_real_stripe_key_uses_real_stripe() -> None:
    settings = Settings(environment="development", stripe_secret_key=SecretStr("sk_test_51RealKeyFromDashboard"))

    wired, standin = start_dev_stripe(settings, api_host="127.0.0.1", api_port=8000)

    assert standin is None
    assert wired is settings
    assert wired.stripe_api_base == "https://api.stripe.com"


def test_development_wiring_refuses_the_standin_in_production() -> None:
    production = Settings(environment="development").model_copy(update={"environment": "production"})
    with pytest.raises(StandinRefused):
        start_dev_stripe(production, api_host="127.0.0.1", api_port=8000)


def test_state_and_keys_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "run" / "stripe-standin.json"
    first = start_standin(StandinConfig(environment="test", state_path=state))
    try:
        sdk: Any = stripe.StripeClient(
            first.config.secret_key, base_addresses={"api": first.url}, max_network_retries=0
        )
        created = sdk.v1.checkout.sessions.create(session_params(), {"idempotency_key": "purchase:7"})
    finally:
        first.stop()
    assert state.exists()

    second = start_standin(StandinConfig(environment="test", state_path=state))
    try:
        assert (second.config.secret_key, second.config.webhook_secret) == (
            first.config.secret_key,
            first.config.webhook_secret,
        )
        # The same port, so the checkout URL handed out before the restart still opens the page.
        assert second.port == first.port
        assert httpx.get(created.url).status_code == 200
        sdk = stripe.StripeClient(second.config.secret_key, base_addresses={"api": second.url})
        assert sdk.v1.checkout.sessions.retrieve(created.id).status == "open"
        again = sdk.v1.checkout.sessions.create(session_params(), {"idempotency_key": "purchase:7"})
        assert again.id == created.id
        paid = second.store.pay_checkout(created.id, number="4242424242424242", expiry="12/40", cvc="123")
        assert paid.redirect_url is not None
        newer = sdk.v1.checkout.sessions.create(session_params())
        listed = sdk.v1.checkout.sessions.list({"limit": 10})
        assert [item.id for item in listed.data] == [newer.id, created.id]
        assert sdk.v1.checkout.sessions.retrieve(created.id).payment_status == "paid"
    finally:
        second.stop()


def test_creditrail_dev_without_a_key_runs_the_app_against_the_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'dev.db'}")
    monkeypatch.delenv("CREDITRAIL_STRIPE_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    served: list[Any] = []

    def serve(app: Any, **_options: Any) -> None:
        # In place of uvicorn's loop: the app the command built, checked while the stand-in still runs.
        settings = app.state.settings
        sdk = stripe.StripeClient(
            settings.stripe_secret_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            max_network_retries=0,
        )
        served.append((settings, sdk.v1.checkout.sessions.list({"limit": 1}).data))

    monkeypatch.setattr(uvicorn, "run", serve)
    port = free_port()
    try:
        result = CliRunner().invoke(main, ["dev", "--no-chain", "--port", str(port)])
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    assert len(served) == 1
    settings, listed = served[0]
    assert listed == []
    assert f"stripe       local stand-in at {settings.stripe_api_base} (not Stripe" in result.output
    assert settings.stripe_secret_key.get_secret_value().startswith("sk_test_")
    assert purchase_complete_url(settings) == f"http://127.0.0.1:{port}/credits/purchase-complete"
    assert (tmp_path / ".run" / "dev-keys.json").exists()
