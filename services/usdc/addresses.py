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
from services.core.money import credits_to_usdc_units
from services.core.settings import ChainSettings, Settings
from services.ledger.common import lock_customer
from services.usdc import repository as repo
from services.usdc.errors import ChainNotConfigured, DepositAmountOutOfBounds, UsdcRailOff
from services.usdc.qr import qr_svg


@dataclass(frozen=True, slots=True)
class DepositAddressView:
    account_id: int
    chain_id: int
    chain_name: str
    address: str  # EIP-55 checksummed, for display
    usdc_address: str
    payment_uri: str
    # The payment URI as a QR code (an SVG document), for a phone's wallet to scan.
    qr_svg: str
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


def check_payment_amount(settings: Settings, chain: ChainSettings, amount_usdc_units: int) -> None:
    """A payment request asks for nothing (0: the wallet asks the payer), or for an amount the chain credits: at
    least its minimum deposit, at most what one mint may be (``max_amount_credits``)."""
    if amount_usdc_units == 0:
        return
    maximum = credits_to_usdc_units(settings.max_amount_credits)
    if not chain.min_deposit_usdc_units <= amount_usdc_units <= maximum:
        raise DepositAmountOutOfBounds(
            f"a deposit on chain {chain.chain_id} is credited from {chain.min_deposit_usdc_units} to {maximum} "
            "USDC base units",
            field="amount_usdc_units",
            min_usdc_units=chain.min_deposit_usdc_units,
            max_usdc_units=maximum,
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
    the customer's: so it is registered, and watched by the listener, on every configured chain at once.
    ``amount_usdc_units`` (0 for none) goes into the payment URI and its QR code; outside the chain's bounds it is
    refused (``check_payment_amount``) before anything is written."""
    chain = chain_settings(settings, chain_id)
    check_payment_amount(settings, chain, amount_usdc_units)
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
        row = repo.deposit_address_for(session, account_id, chain_id)
    chain_name = chain.name or f"chain {chain_id}"
    payment_uri = eip681_transfer_uri(
        token=chain.usdc_address, chain_id=chain_id, to=row.address, value_units=amount_usdc_units
    )
    return DepositAddressView(
        account_id=account_id,
        chain_id=chain_id,
        chain_name=chain_name,
        address=checksum(row.address),
        usdc_address=checksum(chain.usdc_address),
        payment_uri=payment_uri,
        qr_svg=qr_svg(payment_uri, title=f"Pay USDC on {chain_name}"),
        confirmations=chain.confirmations,
        use_finalized=chain.use_finalized,
        min_deposit_usdc_units=chain.min_deposit_usdc_units,
        carry_usdc_units=int(row.carry_usdc_units),
    )
