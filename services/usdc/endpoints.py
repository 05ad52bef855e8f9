"""The USDC rail over HTTP: configured chains, the customer's deposit address (with an EIP-681 payment URI) and
deposits with their confirmations so far; for admins, where each chain's listener stands and any account's deposit
addresses and deposits; and, for anyone who sent a transfer, its claim by transaction hash (``POST
/v1/x402/credits/claims``: the self-broadcast way of paying over x402), credited as soon as the chain's
confirmations allow rather than at the listener's next poll."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from chain.addresses import checksum
from chain.errors import ChainRpcError
from services.api.deps import AdminKey, CustomerOrSession, EngineDep, SessionDep, SettingsDep
from services.api.pages import Cursor, Page, composite_cursor, id_cursor, page_of, parse_composite_cursor
from services.api.types import MAX_BIGINT, Id
from services.core.clock import utcnow
from services.core.errors import NotFound, UpstreamUnavailable
from services.core.logs import secrets_of
from services.core.settings import Settings
from services.ledger.accounts import require_customer_account
from services.usdc import repository as repo
from services.usdc import status
from services.usdc.addresses import ensure_deposit_address
from services.usdc.chains import rpc_for
from services.usdc.errors import AlreadyCredited, NotADeposit, TransactionNotFound, TransactionReverted, UnknownChain
from services.usdc.flows.observe import (
    ObservedStatus,
    ObservedTransaction,
    TransactionStatus,
    normalize_tx_hash,
    observe_transaction,
)
from services.usdc.history import ChainHeads
from services.usdc.schemas import (
    AdminDepositAddressOut,
    AdminDepositOut,
    ChainOut,
    ClaimedDepositOut,
    ClaimIn,
    ClaimOut,
    DepositAddressOut,
    DepositOut,
)

router = APIRouter(prefix="/v1/usdc", tags=["usdc"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])
claims_router = APIRouter(prefix="/v1/x402", tags=["x402"])


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
                via=row.via,
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


# --- claims: a transfer sent by its payer, submitted by transaction hash ------------------------------------


@claims_router.post(
    "/credits/claims",
    responses={202: {"model": ClaimOut, "description": "Recorded; waiting for the chain's confirmations"}},
)
async def claim_transfer(engine: EngineDep, settings: SettingsDep, body: ClaimIn, response: Response) -> ClaimOut:
    """Credit a USDC transfer to one of our deposit addresses by its transaction hash, as soon as the chain's
    confirmations allow (no key: the transfer is the proof). 200 with the deposits credited and their lots; 202
    while some wait for their confirmations (the listener, or another claim, credits them then)."""
    tx_hash = normalize_tx_hash(body.tx_hash)
    chain = next((c for c in settings.usdc_chains if c.chain_id == body.chain_id), None)
    if chain is None or not settings.usdc_xpub:
        raise UnknownChain(f"chain {body.chain_id} is not a configured USDC chain", chain_id=body.chain_id)
    rpc = rpc_for(chain)
    try:
        seen = await run_in_threadpool(observe_transaction, engine, chain, rpc, tx_hash, now=utcnow())
    except ChainRpcError as exc:
        # (named by chain id: the node's URL may carry its provider's key)
        raise UpstreamUnavailable(f"chain {chain.chain_id}'s node did not answer", chain_id=chain.chain_id) from exc
    finally:
        rpc.close()
    answer = _claim_answer(seen)
    if answer.status == "pending":
        response.status_code = 202
    return answer


def _claim_answer(seen: ObservedTransaction) -> ClaimOut:
    where = {"chain_id": seen.chain_id, "tx_hash": seen.tx_hash}
    if seen.status == TransactionStatus.NOT_FOUND:
        raise TransactionNotFound(f"chain {seen.chain_id} has no mined transaction {seen.tx_hash}", **where)
    if seen.status == TransactionStatus.REVERTED:
        raise TransactionReverted(f"transaction {seen.tx_hash} reverted: it moved no tokens", **where)
    if not seen.is_deposit:
        raise NotADeposit(
            f"transaction {seen.tx_hash} has no transfer of the chain's USDC to a deposit address of ours", **where
        )
    deposits = seen.deposits
    if all(d.status == ObservedStatus.CREDITED and not d.credited_now for d in deposits):
        raise AlreadyCredited(
            f"transaction {seen.tx_hash} was credited before",
            **where,
            lots=[{"deposit_id": d.deposit_id, "lot_id": d.lot_id, "credits": d.credits} for d in deposits],
        )
    pending = any(d.status == ObservedStatus.PENDING for d in deposits)
    assert seen.block_number is not None
    return ClaimOut(
        chain_id=seen.chain_id,
        tx_hash=seen.tx_hash,
        status="pending" if pending else "credited",
        block_number=seen.block_number,
        deposits=[
            ClaimedDepositOut(
                deposit_id=d.deposit_id,
                log_index=d.log_index,
                to_address=checksum(d.to_address),
                amount_usdc_units=d.amount_usdc_units,
                credits=d.credits,
                status=d.status.value,
                confirmations_to_come=d.confirmations_to_come,
                lot_id=d.lot_id,
                via=d.via,
                credited_now=d.credited_now,
            )
            for d in deposits
        ],
    )
