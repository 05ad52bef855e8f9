"""The USDC rail over HTTP: configured chains, the customer's deposit address (with an EIP-681 payment URI) and
deposits with their confirmations so far; for admins, where each chain's listener stands and any account's deposit
addresses and deposits."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import Session

from chain.addresses import checksum
from services.api.deps import AdminKey, CustomerOrSession, SessionDep, SettingsDep
from services.api.pages import Cursor, Page, composite_cursor, id_cursor, page_of, parse_composite_cursor
from services.api.types import MAX_BIGINT, Id
from services.core.errors import NotFound
from services.core.logs import secrets_of
from services.core.settings import Settings
from services.ledger.accounts import require_customer_account
from services.usdc import repository as repo
from services.usdc import status
from services.usdc.addresses import ensure_deposit_address
from services.usdc.history import ChainHeads
from services.usdc.schemas import (
    AdminDepositAddressOut,
    AdminDepositOut,
    ChainOut,
    DepositAddressOut,
    DepositOut,
)

router = APIRouter(prefix="/v1/usdc", tags=["usdc"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])


def _account(principal: CustomerOrSession) -> int:
    assert principal.account_id is not None
    return principal.account_id


@router.get("/chains")
def list_chains(settings: SettingsDep, _principal: CustomerOrSession) -> Page[ChainOut]:
    """The configured chains (one page: there are as many as the configuration names)."""
    if not settings.usdc_xpub:
        return Page[ChainOut](data=[], has_more=False)
    chains = [
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
    return Page[ChainOut](data=chains, has_more=False)


@router.get("/deposit-address")
def deposit_address(
    session: SessionDep,
    settings: SettingsDep,
    principal: CustomerOrSession,
    chain_id: Annotated[int, Query(gt=0, le=MAX_BIGINT)],
    amount_usdc_units: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
) -> DepositAddressOut:
    view = ensure_deposit_address(
        session, settings, account_id=_account(principal), chain_id=chain_id, amount_usdc_units=amount_usdc_units
    )
    return DepositAddressOut(**asdict(view))


@router.get("/deposits")
def list_deposits(
    session: SessionDep,
    settings: SettingsDep,
    principal: CustomerOrSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[DepositOut]:
    """The account's deposits on every chain, newest first, with their confirmations so far."""
    before, before_id = None, None
    if cursor is not None:
        before, (raw_id,) = parse_composite_cursor(cursor, 1)
        before_id = id_cursor(raw_id)
    out = []
    heads = ChainHeads(session)
    rows = repo.account_deposits(session, _account(principal), limit + 1, before=before, before_id=before_id)
    for row in rows:
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
    return page_of(out, limit, lambda deposit: composite_cursor(deposit.observed_at, deposit.id))


# --- admins ------------------------------------------------------------------------------------------------


class ChainNotFound(NotFound):
    code = "chain_not_found"


def _chain_statuses(session: Session, settings: Settings) -> list[status.ChainStatus]:
    chains = settings.usdc_chains if settings.usdc_xpub else []
    return status.chain_statuses(status.read_cursors(session), chains, secrets_of(settings))


@admin_router.get("/usdc/chains")
def list_chain_statuses(session: SessionDep, settings: SettingsDep, _admin: AdminKey) -> Page[status.ChainStatus]:
    """Every configured chain (then any known only from a stored cursor) and where its listener stands: the next
    block to scan, the head seen, the lag, the last node error and when, the deposits waiting for confirmations."""
    return Page[status.ChainStatus](data=_chain_statuses(session, settings), has_more=False, next_cursor=None)


@admin_router.get("/usdc/chains/{chain_id}")
def get_chain_status(chain_id: Id, session: SessionDep, settings: SettingsDep, _admin: AdminKey) -> status.ChainStatus:
    found = next((view for view in _chain_statuses(session, settings) if view.chain_id == chain_id), None)
    if found is None:
        raise ChainNotFound(f"chain {chain_id} is neither configured nor known", chain_id=chain_id)
    return found


@admin_router.get("/accounts/{account_id}/usdc/addresses")
def list_account_addresses(account_id: Id, session: SessionDep, _admin: AdminKey) -> Page[AdminDepositAddressOut]:
    """The account's deposit addresses (one per chain it asked for), with the carry on each."""
    require_customer_account(session, account_id)
    rows = status.account_addresses(session, account_id)
    data = [AdminDepositAddressOut.model_validate(row, from_attributes=True) for row in rows]
    return Page[AdminDepositAddressOut](data=data, has_more=False, next_cursor=None)


@admin_router.get("/accounts/{account_id}/usdc/deposits")
def list_account_deposits(
    account_id: Id,
    session: SessionDep,
    _admin: AdminKey,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[AdminDepositOut]:
    """The account's deposits of every status, newest first; page on with ``cursor=<next_cursor>``."""
    require_customer_account(session, account_id)
    rows = status.account_deposits_page(session, account_id, limit + 1, id_cursor(cursor))
    data = [AdminDepositOut.model_validate(row, from_attributes=True) for row in rows]
    return page_of(data, limit, lambda deposit: deposit.id)
