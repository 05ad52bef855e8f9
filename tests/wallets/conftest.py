"""Wallet tests use the API tests' app and agents: eth-account keys that sign requests the way an agent would."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger.minting import mint
from services.ledger.system_accounts import SystemAccount
from services.wallets.models import LinkedVia
from services.wallets.service import account_for_wallet
from tests.api.conftest import Api, api

__all__ = ["Agent", "Api", "agent", "api", "other_agent"]


def personal_sign(account: LocalAccount, text: str) -> str:
    return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


@dataclass
class Agent:
    """An agent's wallet: signs requests as the README says (written out here, not taken from the service)."""

    account: LocalAccount = field(default_factory=Account.create)

    @property
    def address(self) -> str:
        return str(self.account.address).lower()

    def headers(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        timestamp: int | None = None,
        nonce: str | None = None,
        signer: LocalAccount | None = None,
    ) -> dict[str, str]:
        timestamp = int(time.time()) if timestamp is None else timestamp
        nonce = nonce or secrets.token_hex(16)
        text = "\n".join(
            [
                "creditrail-signed-request-v1",
                method.upper(),
                path,
                hashlib.sha256(body).hexdigest(),
                str(timestamp),
                nonce,
                self.address,
            ]
        )
        return {
            "X-Wallet-Address": str(self.account.address),
            "X-Wallet-Signature": personal_sign(signer or self.account, text),
            "X-Wallet-Timestamp": str(timestamp),
            "X-Wallet-Nonce": nonce,
        }

    def join(self, api: Api, *, credits: int = 0) -> int:
        """Give the wallet an account (as its first sign-in would), with ``credits`` on it; its id."""
        with unit_of_work(api.engine) as session:
            account_id = account_for_wallet(
                session, self.address, now=utcnow(), create=True, linked_via=LinkedVia.SIGN_IN
            )
            assert account_id is not None
            if credits:
                mint(
                    session,
                    account_id=account_id,
                    amount_credits=credits,
                    rail="card",
                    external_ref=f"cs_test_{self.address}",
                    funding_account_id=SystemAccount.FUNDING_CARD,
                    cost_basis_cents=credits,
                )
        return account_id


@pytest.fixture
def agent() -> Agent:
    return Agent()


@pytest.fixture
def other_agent() -> Agent:
    return Agent()
