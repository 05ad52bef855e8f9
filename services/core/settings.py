"""All settings in one place: environment variables prefixed ``CREDITRAIL_`` and an optional ``.env`` file."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from services.core.errors import CreditrailError

ENV_PREFIX = "CREDITRAIL_"
PLACEHOLDER_MARKERS = ("placeholder", "change-me", "changeme")
MIN_LINK_SECRET_CHARS = 32
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def is_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return not lowered or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


class ChainSettings(BaseModel):
    """One EVM chain the USDC rail listens on."""

    # A refused chain's error names the setting, never the values given (its RPC URL may carry a key).
    model_config = ConfigDict(hide_input_in_errors=True)

    chain_id: int = Field(gt=0)
    name: str = ""
    # Often carries the provider's key (in its path or query): never shown (errors name the chain id, or the URL's
    # scheme and host only: chain.rpc.redact_url).
    rpc_url: str = Field(repr=False)
    usdc_address: str
    # Blocks on top of a deposit's block before it is credited; or wait for the node's `finalized` tag.
    confirmations: int = Field(default=12, ge=0)
    use_finalized: bool = False
    start_block: int = Field(default=0, ge=0)
    min_deposit_usdc_units: int = Field(default=1_000_000, ge=1)
    max_range_blocks: int = Field(default=2_000, ge=1)
    rpc_timeout_seconds: float = Field(default=10.0, gt=0)
    # A block explorer's transaction page, with "{tx_hash}" where the hash goes (receipts link to it), e.g.
    # "https://basescan.org/tx/{tx_hash}"; empty: no link.
    explorer_tx_url: str = ""

    @field_validator("usdc_address")
    @classmethod
    def _usdc_address_is_an_address(cls, value: str) -> str:
        """A 0x address of 40 hex digits; mixed case must be its EIP-55 checksum (a mistyped address is refused at
        start, not used); normalised to lowercase."""
        if not _ADDRESS_RE.fullmatch(value):
            raise ValueError(f"usdc_address must be a 0x address of 40 hex digits, got {value[:60]!r}")
        body = value[2:]
        if body != body.lower() and body != body.upper() and to_checksum_address(value) != value:
            raise ValueError(
                f"usdc_address {value} is not a valid EIP-55 checksum address (mixed case that does not match its "
                "checksum: a typo?); give it checksummed or in lowercase"
            )
        return value.lower()


class Settings(BaseSettings):
    # An empty variable counts as unset (compose files pass optional settings as ``${VAR:-}``); a refused setting is
    # named, never echoed (hide_input_in_errors: it may be a secret, or carry one).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"

    # Storage: a SQLite file by default, PostgreSQL when the URL says so.
    database_url: str = "sqlite:///./creditrail.db"
    # Upgrade the schema on start; when off, a service refuses to start on a schema that is behind.
    auto_migrate: bool = True
    database_pool_size: int = Field(default=10, ge=1)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    # API: every request body is capped before it is read (the Stripe webhook keeps its own, smaller cap), and a
    # JSON body nested deeper than this is refused before it is parsed.
    api_max_body_bytes: int = Field(default=1_048_576, ge=1)
    api_max_json_depth: int = Field(default=64, ge=1, le=1_000)
    # How often the API process hands the interpreter from one thread to another. Its threads that fulfil card
    # purchases after their acknowledgement run Python code for milliseconds at a time; at each handover between the
    # event loop and a thread (a webhook stored, then acknowledged) the loop may wait up to this long for its turn.
    # The default is Python's own (5 ms): measured end to end (bench_outbox, bench_card), 0.5 ms cost more CPU per
    # webhook than it saved in waiting, and raised the acknowledgement's p99.
    api_thread_switch_interval_seconds: float = Field(default=0.005, gt=0, le=0.1)

    # Deploying: the one public base URL every link handed out is built from (services.core.urls), e.g.
    # "https://credits.example.com" or "https://example.com/billing". Required, and https, in production; elsewhere
    # it defaults to http://{api_host}:{api_port}.
    public_base_url: str = ""
    # The credits widget on platforms' pages: the origins (scheme://host[:port]) whose pages may call the API from a
    # browser (CORS, bearer tokens only: no cookies). Unset: none, except in development and test, where any
    # http://127.0.0.1 or http://localhost port may (services.api.cors).
    widget_origins: list[str] = Field(default_factory=list)

    # Ledger
    lot_validity_months: int = Field(default=12, ge=1)
    hold_default_ttl_seconds: int = Field(default=300, ge=1)
    hold_max_ttl_seconds: int = Field(default=86_400, ge=1)
    max_amount_credits: int = Field(default=10**12, ge=1)

    # Card rail (Stripe). With no secret key the card rail is off (``stripe_configured``); a key or webhook secret
    # that looks like a placeholder is refused in production.
    stripe_secret_key: SecretStr = SecretStr("")
    # Several webhook signing secrets are accepted at once, for rotation; with none, no webhook verifies.
    stripe_webhook_secrets: list[SecretStr] = Field(default_factory=list)

    # Card rail: the Stripe client, what can be bought, where Checkout returns, the webhook inbox and the jobs.
    # The client is built from these in one place (services.card.stripe_client), so tests and operators can point
    # it anywhere; the API version is pinned so a Stripe upgrade never changes the shapes we parse.
    stripe_api_base: str = "https://api.stripe.com"
    stripe_api_version: str = "2026-10-28.endive"
    stripe_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    stripe_read_timeout_seconds: float = Field(default=20.0, gt=0)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    # Prefixed to every Stripe idempotency key we derive ("purchase:<id>"), for installs sharing a Stripe account.
    stripe_idempotency_namespace: str = Field(default="", max_length=40)
    # Custom card amounts: 500-credit steps between these bounds (inclusive).
    card_custom_min_credits: int = Field(default=500, ge=500)
    card_custom_max_credits: int = Field(default=100_000, ge=500)
    # Checkout sends the customer back to the credits page under ``public_base_url`` (services.core.urls).
    # Webhook signatures: how old a signature may be, and how far ahead of our clock (clock skew).
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_webhook_future_tolerance_seconds: int = Field(default=60, ge=0)
    # Process a stored event in the API process right after its acknowledgement; the worker's inbox job takes
    # what that missed (a crash, a failure) once it is older than the grace period.
    card_process_webhooks_inline: bool = True
    card_inline_processing_threads: int = Field(default=4, ge=1, le=64)
    card_inbox_grace_seconds: float = Field(default=30.0, ge=0)
    card_inbox_max_attempts: int = Field(default=10, ge=1)
    card_inbox_backoff_initial_seconds: float = Field(default=30.0, gt=0)
    card_inbox_backoff_max_seconds: float = Field(default=3_600.0, gt=0)
    card_inbox_interval_seconds: float = Field(default=15.0, gt=0)
    card_inbox_batch_size: int = Field(default=100, ge=1)
    # The sync job: recent Checkout Sessions and events read back from Stripe, so a lost webhook still mints.
    card_sync_interval_seconds: float = Field(default=300.0, gt=0)
    card_sync_lookback_seconds: int = Field(default=3 * 86_400, ge=60)
    card_sync_max_pages: int = Field(default=10, ge=1)
    card_sync_batch_size: int = Field(default=1_000, ge=1)
    # Auto-recharge: how often balances are compared with thresholds, and when a customer's recharge turns off.
    card_auto_recharge_interval_seconds: float = Field(default=60.0, gt=0)
    card_auto_recharge_batch_size: int = Field(default=100, ge=1)
    card_auto_recharge_max_failures: int = Field(default=3, ge=1)
    # Card purchases never completed: once its Checkout Session's expires_at and this grace have passed, the sync
    # job asks Stripe about a purchase still open and expires it when its session can no longer be paid.
    card_checkout_expiry_grace_seconds: int = Field(default=3_600, ge=0)

    # Worker: the scheduler's periodic jobs. Each job sweeps in batches of its batch size, one database
    # transaction per batch, every interval; a failed run is retried after an exponential backoff (doubling from
    # the initial delay up to the maximum) instead of waiting for its next interval.
    worker_lot_expiry_interval_seconds: float = Field(default=60.0, gt=0)
    # A batch of lot expiry locks only the accounts of its lots (on PostgreSQL passing over any busy right now), so
    # a large batch costs customers little, and the cost per lot falls with it (one transaction, one statement).
    worker_lot_expiry_batch_size: int = Field(default=2_000, ge=1)
    # Lot expiry paces itself while it works off a backlog, so that customers' spends beside it keep their rate: it
    # is busy at most this share of the time (resting between batches), but never so little that it expires fewer
    # lots a second than the minimum (so that a backlog of a million lots is gone within ten minutes).
    worker_lot_expiry_busy_share: float = Field(default=0.1, gt=0, le=1)
    worker_lot_expiry_min_lots_per_second: float = Field(default=2_000.0, gt=0)
    worker_hold_expiry_interval_seconds: float = Field(default=10.0, gt=0)
    worker_hold_expiry_batch_size: int = Field(default=500, ge=1)
    worker_backoff_initial_seconds: float = Field(default=1.0, gt=0)
    worker_backoff_max_seconds: float = Field(default=300.0, gt=0)
    worker_log_level: str = "INFO"
    # The jobs this worker runs, by name (e.g. '["ledger.expire_lots"]'); empty: every registered job.
    worker_jobs: list[str] = Field(default_factory=list)

    # USDC rail. Deposit addresses are derived from this extended public key (the service never holds the keys that
    # control deposits); with no xpub or no chains the rail is off.
    usdc_xpub: str = ""
    usdc_chains: list[ChainSettings] = Field(default_factory=list)
    usdc_poll_interval_seconds: float = Field(default=5.0, gt=0)
    usdc_confirm_batch_size: int = Field(default=200, ge=1)
    # How many recent block hashes the listener keeps per chain to notice a reorg.
    usdc_recent_blocks_kept: int = Field(default=256, ge=8)

    # Buying credits over x402 (services/x402/). Settlement goes through an external facilitator when
    # ``x402_facilitator_url`` is set (the x402 /verify, /settle, /supported API), else through the built-in one,
    # which relays ``transferWithAuthorization`` from ``x402_relayer_key``: a key holding gas only (the transfer goes
    # from the payer straight to the beneficiary's deposit address, never through it). With neither, x402 is off.
    # The relayer key must be given explicitly (`creditrail dev` sets a funded local-chain account).
    x402_facilitator_url: str = ""
    x402_facilitator_timeout_seconds: float = Field(default=30.0, gt=0)
    x402_relayer_key: SecretStr = SecretStr("")
    # In production the built-in facilitator is refused unless this says it is meant (a relayer key left in a
    # production configuration by mistake does not start relaying).
    x402_builtin_facilitator_in_production: bool = False
    # Gas limit of one relayed transferWithAuthorization.
    x402_relayer_gas_limit: int = Field(default=150_000, ge=21_000)
    # The offer's maxTimeoutSeconds: how long a signed authorization may take to reach us.
    x402_max_timeout_seconds: int = Field(default=300, ge=30, le=86_400)
    # An authorization is refused unless it is still valid this long after we receive it (time to settle), and one
    # whose validAfter lies further than this in the future is refused (clocks differ a little).
    x402_valid_before_slack_seconds: int = Field(default=10, ge=0, le=600)
    x402_clock_skew_seconds: int = Field(default=5, ge=0, le=600)
    # How long a settlement waits for its transaction's receipt, and a duplicate of a payment being settled waits
    # for the first one's outcome, before answering that it is still settling (a later retry gets the outcome).
    x402_settle_wait_seconds: float = Field(default=30.0, gt=0)
    # The job resolving payments a crash left settling: how often, and how long after its start a payment counts
    # as left behind (longer than any request's settlement).
    x402_resolve_interval_seconds: float = Field(default=30.0, gt=0)
    x402_resolve_after_seconds: float = Field(default=120.0, gt=0)
    # Blocks searched backwards for the AuthorizationUsed log of a payment whose transaction hash is unknown.
    x402_lookback_blocks: int = Field(default=5_000, ge=1)

    # Finance. A period's external records are gathered this far either side of it, so that items paid in one
    # period and credited in the next (or refunded later) are matched, and shown as late.
    finance_late_window_seconds: int = Field(default=3 * 86_400, ge=0)
    # The daily reconciliation: every interval, the last ``finance_reconcile_days`` whole UTC days (yesterday, and
    # the days before it again, so late items settle), each rail that is on.
    finance_reconcile_interval_seconds: float = Field(default=86_400.0, gt=0)
    finance_reconcile_days: int = Field(default=2, ge=1, le=31)

    # Customer sessions (services.apikeys.sessions): the platform's backend asks for one, the customer's browser
    # uses it. A session lives ``lifetime_seconds`` (the default below unless asked otherwise, within the bounds),
    # slides forward on use, and never past ``customer_session_max_age_seconds`` after it was created.
    customer_session_default_lifetime_seconds: int = Field(default=1_800, ge=60, le=86_400)
    customer_session_min_lifetime_seconds: int = Field(default=60, ge=1)
    customer_session_max_lifetime_seconds: int = Field(default=86_400, ge=60)
    customer_session_max_age_seconds: int = Field(default=43_200, ge=60)

    # Wallets as identity (services.wallets): a signed request's timestamp must be within this many seconds of the
    # server's clock, either way (its nonce is kept as long, then purged every ``..._purge_interval_seconds``); a
    # Sign-In-With-X nonce or a link challenge is good for ``wallet_challenge_lifetime_seconds``; a session a wallet
    # signs in for lives ``wallet_session_lifetime_seconds`` (sliding, within the customer sessions' maximum age).
    wallet_signature_window_seconds: int = Field(default=300, ge=10, le=3_600)
    wallet_challenge_lifetime_seconds: int = Field(default=300, ge=30, le=3_600)
    wallet_session_lifetime_seconds: int = Field(default=900, ge=60, le=86_400)
    worker_wallet_purge_interval_seconds: float = Field(default=300.0, gt=0)
    worker_wallet_purge_batch_size: int = Field(default=1_000, ge=1)

    # Receipts and notices: the outbox (services/outbox/) and the SMTP server the worker delivers them through.
    # Accounts without an email get none. smtp_host empty: messages wait in the outbox, unsent.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    mail_from: str = "creditrail <receipts@localhost>"
    # Where customers get help: named on every receipt and notice.
    support_email: str = ""
    # Signs receipt links (services/outbox/links.py), so that a link in a mail opens without a bearer token.
    # Required in production (at least 32 characters); `creditrail dev` generates one and keeps it in .run/.
    # Changing it breaks every link handed out before.
    receipt_link_secret: SecretStr = SecretStr("")
    support_url: str = ""
    # The delivery job: how often, how many messages per batch, when a message gives up (after this many attempts),
    # the backoff between attempts (doubling from the initial delay up to the maximum), and how long a claimed
    # message is left to its sender before another delivery may take it again (a sender killed mid-send).
    outbox_interval_seconds: float = Field(default=2.0, gt=0)
    outbox_batch_size: int = Field(default=50, ge=1)
    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_backoff_initial_seconds: float = Field(default=30.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=3_600.0, gt=0)
    outbox_lease_seconds: float = Field(default=300.0, gt=0)
    # How many SMTP conversations the delivery job holds at once (each a connection of its own).
    outbox_concurrency: int = Field(default=4, ge=1, le=64)

    # The platform's webhooks (services/events/): how often the delivery job runs and how many deliveries a batch
    # claims, the HTTP timeout of one attempt, how many requests are in flight at once (in all, and to one endpoint),
    # and how long a claimed delivery is left to its sender before another run may take it again. The retry
    # schedule is fixed (services.events.tasks.RETRY_SCHEDULE_SECONDS: about three days).
    webhook_interval_seconds: float = Field(default=2.0, gt=0)
    webhook_batch_size: int = Field(default=100, ge=1)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_concurrency: int = Field(default=8, ge=1, le=64)
    webhook_max_in_flight_per_endpoint: int = Field(default=4, ge=1, le=64)
    webhook_lease_seconds: float = Field(default=300.0, gt=0)

    # Alerts (services/alerts/): how often the worker looks for crossings (low balance, expiring credits, budget
    # thresholds) and how many accounts, budgets or lots it takes per batch; how far past its threshold a low balance
    # or a budget must recover (a percentage of the threshold) before its alert is armed again.
    alerts_interval_seconds: float = Field(default=30.0, gt=0)
    alerts_batch_size: int = Field(default=200, ge=1)
    alerts_rearm_margin_percent: int = Field(default=10, ge=0, le=50)

    # Operating it: metrics, readiness and logs.
    # /metrics asks for this bearer token when it is set. Without a token it is open when public, and it is public
    # by default in development and test only (unset: by environment; outside them it is refused without a token).
    metrics_token: SecretStr | None = None
    metrics_public: bool | None = None
    # /readyz is not ready while a configured chain's listener is more blocks behind its head than this, or a job
    # has failed this many runs in a row.
    readyz_max_chain_lag_blocks: int = Field(default=1_000, ge=0)
    readyz_max_job_failures: int = Field(default=5, ge=1)
    # The worker serves its own /metrics (the same protection) on this port when it is set.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Log lines: JSON objects, or readable text (unset: text in development, JSON otherwise); the API's level.
    log_format: Literal["json", "text"] | None = None
    log_level: str = "INFO"

    @property
    def metrics_open(self) -> bool:
        """Whether /metrics answers without a token."""
        if self.metrics_public is not None:
            return self.metrics_public
        return self.environment in ("development", "test")

    @property
    def log_format_in_effect(self) -> str:
        return self.log_format or ("text" if self.environment == "development" else "json")

    @property
    def stripe_configured(self) -> bool:
        """Whether a real Stripe secret key is set: without one the card rail is off (its jobs, its purchases)."""
        return not is_placeholder(self.stripe_secret_key.get_secret_value())

    @field_validator("x402_relayer_key")
    @classmethod
    def _check_relayer_key(cls, value: SecretStr) -> SecretStr:
        key = value.get_secret_value().strip()
        if key and not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
            raise PydanticCustomError("key", "must be a private key of 32 bytes in hex")
        return SecretStr(key)

    @field_validator("x402_facilitator_url")
    @classmethod
    def _check_facilitator_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise PydanticCustomError("url", "must be an absolute http(s) URL")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _check_public_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PydanticCustomError("url", "must be an absolute http(s) URL, e.g. https://credits.example.com")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise PydanticCustomError("url", "must be a scheme, host and optional path, with no query or credentials")
        return value

    @field_validator("widget_origins")
    @classmethod
    def _check_widget_origins(cls, values: list[str]) -> list[str]:
        origins = []
        for value in values:
            parts = urlsplit(value.strip())
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or parts.username
                or parts.password
                or "*" in value
            ):
                raise PydanticCustomError(
                    "origin", "must list origins such as https://app.example.com (a scheme, a host, a port if any)"
                )
            origins.append(f"{parts.scheme}://{parts.netloc}".lower())
        return origins

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != "production":
            return self
        if not self.public_base_url:
            raise setting_error("public_base_url", "is required in production (the https URL customers reach)")
        if not self.public_base_url.startswith("https://"):
            raise setting_error("public_base_url", "must be https in production")
        # No Stripe key: the card rail is off. A key someone set must be real, and so must its webhook secrets.
        key = self.stripe_secret_key.get_secret_value()
        if key and is_placeholder(key):
            raise setting_error("stripe_secret_key", "holds a placeholder; set a real secret (or unset it)")
        webhook_secrets = [secret.get_secret_value() for secret in self.stripe_webhook_secrets]
        if any(is_placeholder(secret) for secret in webhook_secrets) or (key and not webhook_secrets):
            raise setting_error(
                "stripe_webhook_secrets", "holds a placeholder or nothing; set the real signing secrets"
            )
        if (
            self.x402_relayer_key.get_secret_value()
            and not self.x402_facilitator_url
            and not self.x402_builtin_facilitator_in_production
        ):
            raise setting_error(
                "x402_relayer_key",
                "the built-in x402 facilitator is off in production unless "
                "CREDITRAIL_X402_BUILTIN_FACILITATOR_IN_PRODUCTION=true says it is meant",
            )
        link_secret = self.receipt_link_secret.get_secret_value()
        if len(link_secret) < MIN_LINK_SECRET_CHARS or is_placeholder(link_secret):
            raise setting_error(
                "receipt_link_secret",
                f"is required in production: a random secret of at least {MIN_LINK_SECRET_CHARS} characters",
            )
        return self


def env_name(setting: str) -> str:
    """The environment variable of a setting (``api_port`` -> ``CREDITRAIL_API_PORT``)."""
    return f"{ENV_PREFIX}{setting.upper()}"


def setting_error(setting: str, problem: str) -> PydanticCustomError:
    """A whole-settings check's error, naming the variable it is about (pydantic gives such checks no location)."""
    return PydanticCustomError("setting", "{variable}: {problem}", {"variable": env_name(setting), "problem": problem})


class InvalidSettings(CreditrailError):
    """The configuration cannot be used; the message is one line naming each bad setting's variable."""

    code = "invalid_settings"
    status_code = 500


def describe_settings_error(error: ValidationError) -> str:
    """One line for a settings ValidationError: each problem after its variable's name, never the value given
    (it may be a secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        location = [str(part) for part in item["loc"]]
        if item["type"] == "setting":
            problems.append(item["msg"])
            continue
        if not location:
            problems.append(item["msg"])
            continue
        variable = env_name(location[0])
        inner = ".".join(location[1:])
        problems.append(f"{variable}: {inner + ': ' if inner else ''}{item['msg']}")
    return "; ".join(problems)


def load_settings() -> Settings:
    """Settings from the environment, a bad configuration raised as :class:`InvalidSettings` (one line)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings(describe_settings_error(exc)) from None
    except SettingsError as exc:  # a list or object setting that is not JSON
        field = re.search(r'field "([a-z0-9_]+)"', str(exc))
        cause = exc.__cause__
        reason = f"not valid JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else "cannot be read"
        raise InvalidSettings(f"{env_name(field.group(1)) if field else 'a setting'}: {reason}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
