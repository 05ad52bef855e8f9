"""Where settlement goes: an external facilitator by URL, else the built-in relayer from an explicit key (refused in
production unless said to be meant), else x402 is off; `creditrail dev` sets a local relayer account."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from chain.devchain import dev_account
from services.app.jobs import default_jobs
from services.core.settings import ChainSettings, Settings
from services.dev import DEV_RELAYER_ACCOUNT, dev_x402_relayer
from services.x402.facilitators import BuiltinFacilitator, ExternalFacilitator
from services.x402.flows.purchase import build_rail

KEY = "0x" + "11" * 32
CHAIN = ChainSettings(chain_id=31337, rpc_url="http://127.0.0.1:1", usdc_address="0x" + "22" * 20)
PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "public_base_url": "https://credits.example.com",
    "receipt_link_secret": SecretStr("receipt-links-0123456789abcdef-0123456789"),
}


def _settings(**values: Any) -> Settings:
    return Settings(usdc_xpub="xpub-test", usdc_chains=[CHAIN], **values)


def test_the_facilitator_is_the_external_one_then_the_relayer_then_none() -> None:
    external = build_rail(_settings(x402_facilitator_url="https://facilitator.example/", x402_relayer_key=KEY))
    assert external is not None
    assert isinstance(external.facilitator, ExternalFacilitator)
    builtin = build_rail(_settings(x402_relayer_key=KEY))
    assert builtin is not None
    assert isinstance(builtin.facilitator, BuiltinFacilitator)
    assert build_rail(_settings()) is None
    assert build_rail(Settings(x402_relayer_key=KEY)) is None  # no USDC rail, no x402
    assert [s.name for s in default_jobs(_settings(x402_relayer_key=KEY)) if s.name.startswith("x402.")] == [
        "x402.resolve_settling"
    ]
    assert not [s for s in default_jobs(_settings()) if s.name.startswith("x402.")]


def test_the_builtin_facilitator_is_refused_in_production_unless_meant() -> None:
    with pytest.raises(ValidationError, match="CREDITRAIL_X402_RELAYER_KEY"):
        Settings(**PRODUCTION, x402_relayer_key=KEY)
    meant = Settings(**PRODUCTION, x402_relayer_key=KEY, x402_builtin_facilitator_in_production=True)
    assert meant.x402_relayer_key.get_secret_value() == KEY
    assert Settings(**PRODUCTION, x402_relayer_key=KEY, x402_facilitator_url="https://f.example").x402_facilitator_url


@pytest.mark.parametrize("bad", ["0x1234", "not a key", "0x" + "zz" * 32])
def test_a_relayer_key_that_is_no_key_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="x402_relayer_key"):
        Settings(x402_relayer_key=bad)


def test_development_relays_from_a_funded_local_account_unless_configured() -> None:
    configured = dev_x402_relayer(_settings())
    assert configured.x402_relayer_key.get_secret_value() == dev_account(DEV_RELAYER_ACCOUNT).key.hex()
    assert dev_x402_relayer(_settings(x402_relayer_key=KEY)).x402_relayer_key.get_secret_value() == KEY
    assert (
        dev_x402_relayer(_settings(x402_facilitator_url="https://f.example")).x402_relayer_key.get_secret_value() == ""
    )
