"""Everything in one process for development: the API, the worker, (when anvil is installed) a local chain with
a test USDC token, so a newcomer sees a card-less deposit credited end to end, and (without a Stripe key) the local
stand-in for Stripe with its test checkout page, so buying by card works on a fresh machine too.

On its first start against an empty database it creates an admin key, a demo customer account with a key and a
welcome grant, and prints the keys (they are also kept in ``.run/dev-keys.json``, which only this development mode
writes). On every start it prints a ready link to the credits page for the demo customer: a fresh customer session
(12 hours) in the URL's fragment, as a platform would hand one out. The local chain keeps its state in ``.run/``
across restarts.

Receipt links are signed with a secret generated on the first start and kept in ``.run/receipt-link-secret``.
Without an SMTP server configured, it also starts a local mail server that keeps every message (receipts, notices)
as a ``.eml`` file in ``.run/mail/``, and points the SMTP settings at it; the demo account's email is
``demo@example.test``, so the demo deposit's receipt lands there a few seconds after start.

The deposit addresses of the local chain derive from a fixed, public development seed: never use it elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bip32 import BIP32
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, dev_account, open_dev_token
from chain.node import AnvilNode, find_anvil
from chain.rpc import ChainRpc
from services.apikeys.models import ApiKey
from services.apikeys.service import issue_key
from services.apikeys.sessions import create_session
from services.core.db import table_of, unit_of_work
from services.core.settings import MIN_LINK_SECRET_CHARS, ChainSettings, Settings
from services.core.urls import credits_page_url
from services.ledger.accounts import create_customer_account, update_email
from services.ledger.minting import grant
from services.outbox.devmail import MailFolderServer
from services.stripe_standin.server import StandinConfig, StripeStandin, refuse_outside_development, start_standin
from services.usdc.addresses import ensure_deposit_address

log = logging.getLogger("creditrail.dev")

DEV_CHAIN_ID = 31337
DEV_DEPOSIT_SEED = hashlib.sha256(b"creditrail development deposit addresses (public, never for real funds)").digest()
DEV_TOKEN_MINT_UNITS = 1_000_000 * 1_000_000  # one million test USDC for the deployer
DEMO_DEPOSIT_UNITS = 25_000_000  # 25 test USDC
WELCOME_GRANT_CREDITS = 1_000
DEMO_EMAIL = "demo@example.test"
MAIL_DIR = "mail"
RECEIPT_LINK_SECRET_FILE = "receipt-link-secret"  # noqa: S105 - a file name


def dev_xpub() -> str:
    """The extended public key (m/44'/60'/0') of the public development seed."""
    return str(BIP32.from_seed(DEV_DEPOSIT_SEED).get_xpub_from_path("m/44'/60'/0'"))


# The local chain's development account that relays x402 settlements (it pays the gas; anvil funds it with test
# ether). Account 0 deploys the token and sends the demo deposit, so the relayer is another one.
DEV_RELAYER_ACCOUNT = 9


def dev_x402_relayer(settings: Settings) -> Settings:
    """Settings with the built-in x402 facilitator relaying from a funded local-chain account, unless a
    facilitator or a relayer key is configured already."""
    if settings.x402_facilitator_url or settings.x402_relayer_key.get_secret_value():
        return settings
    key = dev_account(DEV_RELAYER_ACCOUNT).key.hex()
    return settings.model_copy(update={"x402_relayer_key": SecretStr(key)})


@dataclass
class DevChain:
    node: AnvilNode
    rpc: ChainRpc
    token: LocalToken
    chain: ChainSettings

    def close(self) -> None:
        self.rpc.close()
        self.node.stop()


def start_dev_chain(run_dir: Path, *, block_time_seconds: int = 1, confirmations: int = 3) -> DevChain:
    """Start anvil (state kept in ``run_dir``), reuse or deploy the test token, and describe the chain; also write
    ``run_dir/localchain.json`` so ``scripts/localchain.py send`` can send to it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    info_file = run_dir / "localchain.json"
    previous: dict[str, Any] = json.loads(info_file.read_text()) if info_file.exists() else {}
    node = AnvilNode(
        chain_id=DEV_CHAIN_ID, state_path=run_dir / "anvil-state.json", block_time_seconds=block_time_seconds
    )
    node.start()
    rpc = ChainRpc(node.url, expected_chain_id=DEV_CHAIN_ID)
    known = previous.get("token") if previous.get("chain_id") == DEV_CHAIN_ID else None
    token = open_dev_token(rpc, known, DEV_TOKEN_MINT_UNITS)
    info_file.write_text(
        json.dumps(
            {"rpc_url": node.url, "chain_id": DEV_CHAIN_ID, "token": token.address, "deployer": token.wallet.address},
            indent=2,
        )
        + "\n"
    )
    chain = ChainSettings(
        chain_id=DEV_CHAIN_ID,
        name="local anvil",
        rpc_url=node.url,
        usdc_address=token.address,
        confirmations=confirmations,
        start_block=0,
    )
    return DevChain(node, rpc, token, chain)


def anvil_available() -> bool:
    try:
        find_anvil()
    except Exception:
        return False
    return True


@dataclass(frozen=True, slots=True)
class DemoSetup:
    admin_key: str
    customer_key: str
    account_id: int


def bootstrap_demo(engine: Engine, run_dir: Path) -> DemoSetup | None:
    """On an empty database: an admin key, a demo account with a welcome grant, and its key. None otherwise."""
    api_keys = table_of(ApiKey)
    with unit_of_work(engine) as session:
        if session.execute(select(func.count()).select_from(api_keys)).scalar_one():
            return None
        admin = issue_key(session, role="admin", account_id=None, name="development admin")
        account_id = create_customer_account(session, name="demo")
        update_email(session, account_id, email=DEMO_EMAIL, verified=True)
        customer = issue_key(session, role="customer", account_id=account_id, name="demo customer")
        grant(
            session,
            account_id=account_id,
            amount_credits=WELCOME_GRANT_CREDITS,
            idempotency_key="welcome",
            reason="development welcome grant",
        )
    setup = DemoSetup(admin.key, customer.key, account_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "dev-keys.json").write_text(
        json.dumps(
            {"admin_key": setup.admin_key, "customer_key": setup.customer_key, "demo_account_id": account_id}, indent=2
        )
        + "\n"
    )
    return setup


def send_demo_deposit(engine: Engine, settings: Settings, devchain: DevChain, account_id: int) -> str:
    """Send test USDC to the demo account's deposit address; returns the address."""
    with unit_of_work(engine) as session:
        view = ensure_deposit_address(session, settings, account_id=account_id, chain_id=devchain.chain.chain_id)
    devchain.token.transfer(view.address, DEMO_DEPOSIT_UNITS)
    return view.address


WEBHOOK_PATH = "/v1/stripe/webhook"
STANDIN_STATE_FILE = "stripe-standin.json"


def _reachable_host(host: str) -> str:
    """The address a local client reaches a server bound to ``host`` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (a comparison, not a bind)


def start_dev_stripe(
    settings: Settings, *, api_host: str, api_port: int, run_dir: Path | None = None
) -> tuple[Settings, StripeStandin | None]:
    """Without a Stripe key, start the local stand-in for Stripe (a generated ``sk_test_...`` key and webhook
    secret; with ``run_dir``, its state and keys are kept there across restarts) and return the settings pointed at
    it: its API base, that key and secret, webhooks sent to this API's ``/v1/stripe/webhook``, and Checkout's
    success and cancel pages on this API's port unless set. With a real key set, the settings come back unchanged
    and real Stripe is used. Outside development and test, the stand-in refuses to start
    (:class:`~services.stripe_standin.server.StandinRefused`)."""
    if settings.stripe_configured:
        return settings, None
    refuse_outside_development(settings.environment)
    origin = f"http://{_reachable_host(api_host)}:{api_port}"
    standin = start_standin(
        StandinConfig(
            environment=settings.environment,
            webhook_url=f"{origin}{WEBHOOK_PATH}",
            api_version=settings.stripe_api_version,
            state_path=run_dir / STANDIN_STATE_FILE if run_dir is not None else None,
        )
    )
    update: dict[str, Any] = {
        "stripe_secret_key": SecretStr(standin.config.secret_key),
        "stripe_webhook_secrets": [SecretStr(standin.config.webhook_secret)],
        "stripe_api_base": standin.url,
    }
    return settings.model_copy(update=update), standin


DEV_SESSION_LIFETIME_SECONDS = 12 * 60 * 60


def demo_session_url(engine: Engine, settings: Settings, run_dir: Path) -> str | None:
    """A fresh customer session for the demo account (the one ``dev-keys.json`` names), long-lived for development,
    as the credits page's URL with the token in its fragment: what a platform would hand its signed-in user. None
    when there is no demo account (a database set up otherwise)."""
    keys_file = run_dir / "dev-keys.json"
    if not keys_file.exists():
        return None
    account_id = json.loads(keys_file.read_text()).get("demo_account_id")
    api_keys = table_of(ApiKey)
    with unit_of_work(engine) as session:
        admin_id = session.execute(
            select(api_keys.c.id)
            .where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
            .order_by(api_keys.c.id)
            .limit(1)
        ).scalar_one_or_none()
        if not isinstance(account_id, int) or admin_id is None:
            return None
        issued = create_session(
            session,
            settings,
            account_id=account_id,
            created_by_key_id=admin_id,
            lifetime_seconds=min(DEV_SESSION_LIFETIME_SECONDS, settings.customer_session_max_lifetime_seconds),
        )
    return f"{credits_page_url(settings)}#session={issued.token}"


def dev_receipt_link_secret(settings: Settings, run_dir: Path) -> Settings:
    """Without a receipt link secret set, the one kept in ``run_dir/receipt-link-secret`` (generated there on the first
    start, readable by its owner only), so receipt links mailed in development open, and keep opening after a
    restart. A secret set in the environment is kept."""
    if settings.receipt_link_secret.get_secret_value():
        return settings
    path = run_dir / RECEIPT_LINK_SECRET_FILE
    secret = path.read_text(encoding="utf-8").strip() if path.exists() else ""
    if len(secret) < MIN_LINK_SECRET_CHARS:
        secret = secrets.token_urlsafe(48)
        run_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secret + "\n", encoding="utf-8")
    return settings.model_copy(update={"receipt_link_secret": SecretStr(secret)})


def start_dev_mail(settings: Settings, run_dir: Path) -> tuple[Settings, MailFolderServer | None]:
    """Without an SMTP server configured, start the local mail server (every message kept as a ``.eml`` file in
    ``run_dir/mail/``) and return the settings pointed at it, the outbox delivered every 2 seconds. With an SMTP host
    set, the settings come back unchanged."""
    if settings.smtp_host:
        return settings, None
    server = MailFolderServer(run_dir / MAIL_DIR).start()
    update: dict[str, Any] = {
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_security": "none",
        "smtp_username": "",
        "outbox_interval_seconds": min(settings.outbox_interval_seconds, 2.0),
    }
    return settings.model_copy(update=update), server
