"""All settings in one place: environment variables prefixed ``CREDITRAIL_`` and an optional ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_MARKERS = ("placeholder", "change-me", "changeme")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITRAIL_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"

    # Storage: a SQLite file by default, PostgreSQL when the URL says so.
    database_url: str = "sqlite:///./creditrail.db"
    # Upgrade the schema on start; when off, a service refuses to start on a schema that is behind.
    auto_migrate: bool = True
    database_pool_size: int = Field(default=10, ge=1)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    # Ledger
    lot_validity_months: int = Field(default=12, ge=1)
    hold_default_ttl_seconds: int = Field(default=300, ge=1)
    hold_max_ttl_seconds: int = Field(default=86_400, ge=1)
    max_amount_credits: int = Field(default=10**12, ge=1)

    # Card rail (Stripe). Secrets are refused when they look like placeholders outside development and test.
    stripe_secret_key: SecretStr = SecretStr("sk_test_placeholder")
    # Several webhook signing secrets are accepted at once, for rotation.
    stripe_webhook_secrets: list[SecretStr] = Field(default_factory=lambda: [SecretStr("whsec_placeholder")])

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        secrets = {"stripe_secret_key": [self.stripe_secret_key], "stripe_webhook_secrets": self.stripe_webhook_secrets}
        for name, values in secrets.items():
            for secret in values or [SecretStr("")]:
                value = secret.get_secret_value().lower()
                if not value or any(marker in value for marker in PLACEHOLDER_MARKERS):
                    raise ValueError(f"CREDITRAIL_{name.upper()} holds a placeholder; set a real secret")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
