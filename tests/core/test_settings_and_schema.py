from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import text

from services.core.db import make_engine
from services.core.migrate import SchemaBehind, current_revision, ensure_schema, head_revision
from services.core.settings import Settings


def test_placeholder_secrets_are_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", stripe_secret_key=SecretStr("sk_live_real"))


def test_real_secrets_are_accepted_in_production() -> None:
    settings = Settings(
        environment="production",
        stripe_secret_key=SecretStr("sk_live_abc"),
        stripe_webhook_secrets=[SecretStr("whsec_abc")],
    )
    assert settings.stripe_secret_key.get_secret_value() == "sk_live_abc"


def test_placeholders_are_fine_in_development() -> None:
    assert Settings(environment="development").stripe_secret_key.get_secret_value().startswith("sk_test")


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
