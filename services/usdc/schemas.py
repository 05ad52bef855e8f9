"""The USDC rail's API shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from services.api.types import StrictId


class ChainOut(BaseModel):
    chain_id: int
    name: str
    usdc_address: str
    confirmations: int
    use_finalized: bool
    min_deposit_usdc_units: int


class DepositAddressOut(BaseModel):
    account_id: int
    chain_id: int
    chain_name: str
    address: str
    usdc_address: str
    # EIP-681 payment request (for a QR code).
    payment_uri: str
    # The payment URI as a QR code: an SVG document (black on white).
    qr_svg: str
    confirmations: int
    use_finalized: bool
    min_deposit_usdc_units: int
    # USDC base units received but not yet credited (a sub-credit remainder, or deposits below the minimum).
    carry_usdc_units: int


class DepositOut(BaseModel):
    id: int
    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    amount_usdc_units: int
    status: str
    # Blocks on top of the deposit's block as of the listener's last poll; credited once it reaches
    # confirmations_required (and the block is still canonical then).
    confirmations: int
    confirmations_required: int
    credits_minted: int | None
    lot_id: int | None
    observed_at: datetime
    credited_at: datetime | None
    # Why a deposit is set aside (status "set_aside": it cannot be credited, finance looks at it), else null.
    set_aside_reason: str | None = None
    # Who recorded it: listener (the chain's poll), claim (its transaction was claimed) or x402 (an x402 purchase).
    via: str | None = None


class AdminDepositAddressOut(BaseModel):
    chain_id: int
    address: str
    derivation_index: int
    carry_usdc_units: int
    created_at: datetime


class AdminDepositOut(BaseModel):
    id: int
    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    from_address: str
    to_address: str
    amount_usdc_units: int
    status: str
    observed_at: datetime
    confirmed_at: datetime | None
    credited_at: datetime | None
    orphaned_at: datetime | None
    credits_minted: int | None
    lot_id: int | None
    deep_reorgs: int
    set_aside_reason: str | None = None
    via: str | None = None


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain_id: StrictId
    # 0x and 64 hex digits (checked by the endpoint: anything else is a 400 invalid_tx_hash).
    tx_hash: str


class ClaimedDepositOut(BaseModel):
    deposit_id: int
    log_index: int
    # The deposit address the transfer paid (EIP-55).
    to_address: str
    amount_usdc_units: int
    # Credits minted when credited; else what the amount alone is worth (a carried remainder may add to it).
    credits: int
    # pending, credited, carried (below the chain's minimum: added to the next deposit), set_aside, orphaned.
    status: str
    # Blocks still to come before it is credited (0 once credited).
    confirmations_to_come: int
    lot_id: int | None
    # Who recorded it: listener, claim or x402.
    via: str | None
    # Whether this claim credited it (false: credited before, or not yet).
    credited_now: bool


class ClaimOut(BaseModel):
    chain_id: int
    tx_hash: str
    # credited: nothing of it waits any more; pending: some deposit waits for its confirmations.
    status: str
    block_number: int
    deposits: list[ClaimedDepositOut]
