from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import text

from services.core.db import make_engine
from services.core.migrate import SchemaBehind, current_revision, ensure_schema, head_revision
from services.core.settings import Settings

LINK_SECRET = SecretStr("receipt-links-0123456789abcdef-0123456789")


def production(**overrides: Any) -> Settings:
    """Production settings with a valid public base URL and receipt link secret."""
    values: dict[str, Any] = {"receipt_link_secret": LINK_SECRET} | overrides
    return Settings(environment="production", public_base_url="https://credits.example.com", **values)


def test_production_requires_a_long_random_receipt_link_secret() -> None:
    for weak in ("", "short", "receipt-links-change-me-0123456789abcdef"):
        with pytest.raises(ValidationError, match="CREDITRAIL_RECEIPT_LINK_SECRET: is required in production"):
            production(receipt_link_secret=SecretStr(weak))
    assert production().receipt_link_secret == LINK_SECRET
    assert Settings(environment="development").receipt_link_secret.get_secret_value() == ""


def test_placeholder_secrets_are_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="CREDITRAIL_STRIPE_SECRET_KEY: holds a placeholder"):
        production(stripe_secret_key=SecretStr("sk_live_placeholder"))
    with pytest.raises(ValidationError, match="CREDITRAIL_STRIPE_WEBHOOK_SECRETS"):
        production(stripe_secret_key=SecretStr("sk_live_real"))
    with pytest.raises(ValidationError, match="CREDITRAIL_STRIPE_WEBHOOK_SECRETS"):
        production(
            stripe_secret_key=SecretStr("sk_live_real"),
            stripe_webhook_secrets=[SecretStr("whsec_change-me")],
        )


def test_real_secrets_are_accepted_in_production() -> None:
    settings = production(
        stripe_secret_key=SecretStr("sk_live_abc"),
        stripe_webhook_secrets=[SecretStr("whsec_abc")],
    )
    assert settings.stripe_secret_key.get_secret_value() == "sk_live_abc"
    assert settings.stripe_configured


def test_without_a_stripe_key_the_card_rail_is_off_and_production_starts() -> None:
    assert Settings(environment="development").stripe_configured is False
    settings = production()
    assert settings.stripe_secret_key.get_secret_value() == ""
    assert settings.stripe_webhook_secrets == []
    assert settings.stripe_configured is False


def test_production_refuses_a_missing_or_plain_http_public_base_url() -> None:
    with pytest.raises(ValidationError, match="CREDITRAIL_PUBLIC_BASE_URL: is required in production"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="CREDITRAIL_PUBLIC_BASE_URL: must be https in production"):
        Settings(environment="production", public_base_url="http://credits.example.com")
    assert Settings(environment="development", public_base_url="http://localhost:9000").public_base_url


@pytest.mark.parametrize(
    "url", ["credits.example.com", "ftp://x.example", "https://x.example/?a=1", "https://u:p@x.example", "https://"]
)
def test_a_public_base_url_that_is_not_a_plain_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="public_base_url"):
        Settings(public_base_url=url)


def test_public_base_url_loses_its_trailing_slash() -> None:
    assert Settings(public_base_url="https://x.example/billing/").public_base_url == "https://x.example/billing"


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("CREDITRAIL_HOLD_DEFAULT_TTL_SECONDS", "42")
    settings = Settings()
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.hold_default_ttl_seconds == 42


def test_service_refuses_a_schema_that_is_behind(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with pytest.raises(SchemaBehind, match="creditrail migrate"):
        ensure_schema(engine, auto_migrate=False)
    ensure_schema(engine, auto_migrate=True)
    assert current_revision(engine) == head_revision()
    ensure_schema(engine, auto_migrate=False)  # up to date: no complaint


def test_schema_is_upgraded_on_start_on_postgresql(pg_engine) -> None:
    # The shared test schema was migrated by the harness; a second upgrade is a no-op.
    ensure_schema(pg_engine, auto_migrate=True)
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
