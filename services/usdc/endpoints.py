"""The USDC rail over HTTP: configured chains, the customer's deposit address (with an EIP-681 payment URI) and
deposits with their confirmations so far."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from chain.addresses import checksum
from services.api.deps import CustomerKey, SessionDep, SettingsDep
from services.usdc import repository as repo
from services.usdc.addresses import ensure_deposit_address
from services.usdc.history import ChainHeads
from services.usdc.schemas import ChainOut, DepositAddressOut, DepositOut

router = APIRouter(prefix="/v1/usdc", tags=["usdc"])


def _account(principal: CustomerKey) -> int:
    assert principal.account_id is not None
    return principal.account_id


@router.get("/chains")
def list_chains(settings: SettingsDep, _principal: CustomerKey) -> list[ChainOut]:
    if not settings.usdc_xpub:
        return []
    return [
        ChainOut(
            chain_id=c.chain_id,
            name=c.name or f"chain {c.chain_id}",
            usdc_address=checksum(c.usdc_address),
            confirmations=c.confirmations,
            use_finalized=c.use_finalized,
            min_deposit_usdc_units=c.min_deposit_usdc_units,
        )
        for c in settings.usdc_chains
    ]


@router.get("/deposit-address")
def deposit_address(
    session: SessionDep,
    settings: SettingsDep,
    principal: CustomerKey,
    chain_id: Annotated[int, Query(gt=0)],
    amount_usdc_units: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> DepositAddressOut:
    view = ensure_deposit_address(
        session, settings, account_id=_account(principal), chain_id=chain_id, amount_usdc_units=amount_usdc_units
    )
    return DepositAddressOut(**asdict(view))


@router.get("/deposits")
def list_deposits(
    session: SessionDep,
    settings: SettingsDep,
    principal: CustomerKey,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DepositOut]:
    out = []
    heads = ChainHeads(session)
    for row in repo.account_deposits(session, _account(principal), limit):
        required = next((c.confirmations for c in settings.usdc_chains if c.chain_id == row.chain_id), 0)
        out.append(
            DepositOut(
                id=row.id,
                chain_id=row.chain_id,
                tx_hash=row.tx_hash,
                log_index=row.log_index,
                block_number=row.block_number,
                amount_usdc_units=row.amount_usdc_units,
                status=row.status,
                confirmations=heads.confirmations(row),
                confirmations_required=required,
                credits_minted=row.credits_minted,
                lot_id=row.lot_id,
                observed_at=row.observed_at,
                credited_at=row.credited_at,
                set_aside_reason=row.set_aside_reason,
            )
        )
    return out
