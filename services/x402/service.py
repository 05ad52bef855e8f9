"""The x402 purchase's decisions that need only the caller's session: what may be bought, whose account the
credits go to (and so which deposit address is paid), the request's fingerprint, and the answers' bodies."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from chain.addresses import checksum
from services.card.errors import InvalidCustomAmount
from services.card.packs import CUSTOM_STEP_CREDITS, custom_pack
from services.core.db import table_of
from services.core.money import credits_to_usdc_units
from services.core.settings import Settings
from services.ledger.accounts import require_customer_account
from services.ledger.balance import get_balance
from services.ledger.models import Lot
from services.usdc import repository as usdc_repo
from services.usdc.addresses import ensure_deposit_address
from services.wallets.service import account_for_wallet, normalize_wallet_address
from services.x402.errors import BeneficiaryConflict, CreditsNotSold

lots = table_of(Lot)


@dataclass(frozen=True, slots=True)
class PurchaseRequest:
    credits: int
    wallet_address: str
    beneficiary_wallet: str | None = None
    beneficiary_account_id: int | None = None


def check_credits(settings: Settings, credits: int) -> int:
    """The credits as sold (the card's custom-amount rule: 500-credit steps within the card bounds); otherwise a 400
    with the nearest amount that is sold (``suggested_credits``). Returns the amount in USDC base units."""
    try:
        custom_pack(credits, settings)
    except InvalidCustomAmount as exc:
        low, high = settings.card_custom_min_credits, settings.card_custom_max_credits
        steps = -(-max(credits, 0) // CUSTOM_STEP_CREDITS)
        suggested = min(max(steps * CUSTOM_STEP_CREDITS, low), high)
        raise CreditsNotSold(
            f"credits are sold in steps of {CUSTOM_STEP_CREDITS} from {low:,} to {high:,}",
            field="credits",
            suggested_credits=suggested,
            min_credits=low,
            max_credits=high,
            step_credits=CUSTOM_STEP_CREDITS,
        ) from exc
    return credits_to_usdc_units(credits)


def normalized(request: PurchaseRequest) -> PurchaseRequest:
    """The request with its wallets normalised (lowercase); a bad wallet is a 400 ``invalid_wallet_address``."""
    if request.beneficiary_wallet is not None and request.beneficiary_account_id is not None:
        raise BeneficiaryConflict(
            "name the beneficiary by wallet or by account, not both", field="beneficiary_account_id"
        )
    return PurchaseRequest(
        credits=request.credits,
        wallet_address=normalize_wallet_address(request.wallet_address),
        beneficiary_wallet=(
            normalize_wallet_address(request.beneficiary_wallet) if request.beneficiary_wallet is not None else None
        ),
        beneficiary_account_id=request.beneficiary_account_id,
    )


def fingerprint(request: PurchaseRequest) -> str:
    """SHA-256 of what the request buys and for whom (a normalised request), to tell a payment identifier sent
    again for the same request from one reused for another."""
    canonical = json.dumps(
        {
            "credits": request.credits,
            "wallet_address": request.wallet_address,
            "beneficiary_wallet": request.beneficiary_wallet,
            "beneficiary_account_id": request.beneficiary_account_id,
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def beneficiary(session: Session, settings: Settings, request: PurchaseRequest, *, now: datetime) -> tuple[int, str]:
    """The account the credits go to and its deposit address (lowercase), both created on first sight: the account
    named, or the beneficiary wallet's, or the paying wallet's own."""
    if request.beneficiary_account_id is not None:
        require_customer_account(session, request.beneficiary_account_id)
        account_id = request.beneficiary_account_id
    else:
        wallet = request.beneficiary_wallet or request.wallet_address
        found = account_for_wallet(session, wallet, now=now, create=True)
        assert found is not None
        account_id = found
    return account_id, deposit_address(session, settings, account_id, now=now)


def deposit_address(session: Session, settings: Settings, account_id: int, *, now: datetime) -> str:
    """The account's deposit address (lowercase), the ``payTo`` of every offer made to it; created on first sight."""
    chain_id = settings.usdc_chains[0].chain_id
    known = usdc_repo.find_address(session, account_id, chain_id)
    if known is not None:
        return str(known.address)
    view = ensure_deposit_address(session, settings, account_id=account_id, chain_id=chain_id, now=now)
    return view.address.lower()


def pack_covering(settings: Settings, shortfall_credits: int) -> int | None:
    """The smallest pack sold (500-credit steps within the card bounds) that covers ``shortfall_credits``; None when
    nothing is short, or when the largest pack sold does not cover it."""
    if shortfall_credits <= 0:
        return None
    steps = -(-shortfall_credits // CUSTOM_STEP_CREDITS)
    credits = max(steps * CUSTOM_STEP_CREDITS, settings.card_custom_min_credits)
    if credits > settings.card_custom_max_credits:
        return None
    return credits


def paid_body(session: Session, row: Any, *, now: datetime) -> dict[str, Any]:
    """The 200 answer's body: the payment, the lot it minted (if credited yet) and the account's balance."""
    lot: dict[str, Any] | None = None
    if row.lot_id is not None:
        found = session.execute(select(lots).where(lots.c.id == row.lot_id)).one_or_none()
        if found is not None:
            lot = {
                "id": int(found.id),
                "credits": int(found.credits),
                "remaining_credits": int(found.remaining_credits),
                "credited_at": found.credited_at.isoformat(),
                "expires_at": found.expires_at.isoformat(),
                "external_ref": found.external_ref,
            }
    balance = get_balance(session, int(row.account_id), now)
    return {
        "payment_id": int(row.id),
        "status": row.status,
        "credits": int(row.credits),
        "amount_usdc_units": int(row.amount_usdc_units),
        "account_id": int(row.account_id),
        "chain_id": int(row.chain_id),
        "network": row.network,
        "payer": checksum(row.payer),
        "pay_to": checksum(row.pay_to),
        "transaction": row.tx_hash,
        "deposit_id": None if row.deposit_id is None else int(row.deposit_id),
        "lot": lot,
        "balance": {
            "available_credits": balance.available_credits,
            "total_credits": balance.total_credits,
        },
    }
