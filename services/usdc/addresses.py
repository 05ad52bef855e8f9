"""Deposit addresses: one per account and chain, derived from the configured xpub at the account's index.

The index is the account id, so an account's address is the same on every EVM chain and is re-derivable from the
xpub alone (finance can verify it independently). The service holds no private key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlmodel import Session

from chain.addresses import checksum
from chain.hd import DepositAddressDeriver, eip681_transfer_uri
from services.core.clock import utcnow
from services.core.settings import ChainSettings, Settings
from services.ledger.common import lock_customer
from services.usdc import repository as repo
from services.usdc.errors import ChainNotConfigured, UsdcRailOff


@dataclass(frozen=True, slots=True)
class DepositAddressView:
    account_id: int
    chain_id: int
    chain_name: str
    address: str  # EIP-55 checksummed, for display
    usdc_address: str
    payment_uri: str
    confirmations: int
    use_finalized: bool
    min_deposit_usdc_units: int
    carry_usdc_units: int


@lru_cache(maxsize=8)
def _deriver(xpub: str) -> DepositAddressDeriver:
    return DepositAddressDeriver(xpub)


def chain_settings(settings: Settings, chain_id: int) -> ChainSettings:
    if not settings.usdc_xpub or not settings.usdc_chains:
        raise UsdcRailOff("the USDC rail is not configured")
    for chain in settings.usdc_chains:
        if chain.chain_id == chain_id:
            return chain
    raise ChainNotConfigured(
        f"chain {chain_id} is not configured", chain_id=chain_id, configured=[c.chain_id for c in settings.usdc_chains]
    )


def ensure_deposit_address(
    session: Session,
    settings: Settings,
    *,
    account_id: int,
    chain_id: int,
    amount_usdc_units: int = 0,
    now: datetime | None = None,
) -> DepositAddressView:
    """The account's deposit address on the chain, created on first request (idempotent).

    The address is the same on every chain (one xpub, one index), and money sent to it on any configured chain is
    the customer's: so it is registered, and watched by the listener, on every configured chain at once."""
    chain = chain_settings(settings, chain_id)
    row = repo.find_address(session, account_id, chain_id)
    if row is None:
        lock_customer(session, account_id)
        address = _deriver(settings.usdc_xpub).address(account_id)
        for configured in settings.usdc_chains:
            if repo.find_address(session, account_id, configured.chain_id) is None:
                repo.insert_address(
                    session,
                    account_id=account_id,
                    chain_id=configured.chain_id,
                    derivation_index=account_id,
                    address=address,
                    now=now or utcnow(),
                )
        row = repo.find_address(session, account_id, chain_id)
    return DepositAddressView(
        account_id=account_id,
        chain_id=chain_id,
        chain_name=chain.name or f"chain {chain_id}",
        address=checksum(row.address),
        usdc_address=checksum(chain.usdc_address),
        payment_uri=eip681_transfer_uri(
            token=chain.usdc_address, chain_id=chain_id, to=row.address, value_units=amount_usdc_units
        ),
        confirmations=chain.confirmations,
        use_finalized=chain.use_finalized,
        min_deposit_usdc_units=chain.min_deposit_usdc_units,
        carry_usdc_units=int(row.carry_usdc_units),
    )
