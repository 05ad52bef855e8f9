"""Wallets as identity over HTTP: Sign-In-With-X, a customer's wallets (list, link with the wallet's proof, unlink),
and binding a wallet to an account by a platform or an admin."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from services.api.deps import CustomerKey, PlatformKey, SessionDep, SettingsDep
from services.api.pages import Cursor, id_cursor, page_of
from services.api.principal import Principal
from services.api.types import Id
from services.core.clock import utcnow
from services.ledger.accounts import require_customer_account
from services.wallets import challenges
from services.wallets import repository as repo
from services.wallets.addresses import normalize_wallet_address
from services.wallets.models import LinkedVia
from services.wallets.schemas import (
    BindIn,
    LinkChallengeIn,
    LinkChallengeOut,
    LinkIn,
    SiwxIn,
    SiwxNonceIn,
    SiwxNonceOut,
    SiwxSessionOut,
    WalletOut,
    WalletPage,
)

router = APIRouter(prefix="/v1/wallets", tags=["wallets"])
admin_router = APIRouter(prefix="/v1/admin/accounts", tags=["admin"])

DEFAULT_CHAIN_ID = 1
Limit = Annotated[int, Query(ge=1, le=500)]


def _wallet_out(row: Any) -> WalletOut:
    return WalletOut(
        id=row.id, address=row.address, account_id=row.account_id, linked_via=row.linked_via, created_at=row.created_at
    )


def _account(principal: Principal) -> int:
    assert principal.account_id is not None  # guaranteed by CustomerKey
    return principal.account_id


@router.post("/siwx/nonce", status_code=status.HTTP_201_CREATED)
def siwx_nonce(session: SessionDep, settings: SettingsDep, body: SiwxNonceIn | None = None) -> SiwxNonceOut:
    """Begin a Sign-In-With-X (EIP-4361): a nonce and the fields the message must carry (domain, URI, chain id,
    issued-at, expiration). With ``wallet_address`` the answer also carries the exact message to sign. No key."""
    body = body or SiwxNonceIn()
    chain_id = body.chain_id or (settings.usdc_chains[0].chain_id if settings.usdc_chains else DEFAULT_CHAIN_ID)
    issued = challenges.issue_sign_in(
        session, settings, now=utcnow(), chain_id=chain_id, wallet_address=body.wallet_address
    )
    return SiwxNonceOut(
        domain=issued.domain,
        uri=issued.uri,
        version="1",
        chain_id=issued.chain_id,
        nonce=issued.nonce,
        issued_at=issued.issued_at,
        expiration_time=issued.expiration_time,
        statement=issued.statement,
        message=issued.message,
    )


@router.post("/siwx", status_code=status.HTTP_201_CREATED)
def siwx_sign_in(body: SiwxIn, session: SessionDep, settings: SettingsDep) -> SiwxSessionOut:
    """Exchange a signed EIP-4361 message for a short-lived session (``Authorization: Bearer crs_...``) acting for
    the wallet's account as a customer key does; the wallet's first sign-in makes its account. Refused: a domain or
    URI not ours (``siwx_domain_mismatch``), an expired message (``siwx_expired``), a nonce not issued by us,
    expired or used (``challenge_invalid``), a signature that does not recover the message's address
    (``invalid_wallet_signature``). Smart-contract wallets (EIP-1271) cannot sign in this way."""
    signed_in = challenges.sign_in(session, settings, message_text=body.message, signature=body.signature, now=utcnow())
    issued = signed_in.session
    return SiwxSessionOut(
        session_id=issued.id,
        token=issued.token,
        expires_at=issued.expires_at,
        account_id=issued.account_id,
        wallet_address=signed_in.wallet_address,
        created_account=signed_in.created_account,
    )


def _page(session: SessionDep, account_id: int, cursor: str | None, limit: int) -> WalletPage:
    rows = repo.wallets_of_account(session, account_id, after_id=id_cursor(cursor) or 0, limit=limit + 1)
    return page_of([_wallet_out(row) for row in rows], limit, lambda wallet: wallet.id)


@router.get("")
def list_wallets(session: SessionDep, principal: CustomerKey, cursor: Cursor = None, limit: Limit = 100) -> WalletPage:
    """The wallets that act for the calling account, oldest first."""
    return _page(session, _account(principal), cursor, limit)


@router.post("/challenges", status_code=status.HTTP_201_CREATED)
def link_challenge(
    body: LinkChallengeIn, session: SessionDep, settings: SettingsDep, principal: CustomerKey
) -> LinkChallengeOut:
    """A challenge for adding a wallet to the calling account: the wallet signs ``message`` (EIP-191 personal-sign)
    and the proof goes to ``POST /v1/wallets``. A wallet of another account: 409 ``wallet_already_linked``."""
    issued = challenges.issue_link(
        session, settings, account_id=_account(principal), wallet_address=body.wallet_address, now=utcnow()
    )
    return LinkChallengeOut(
        nonce=issued.nonce,
        account_id=issued.account_id,
        wallet_address=issued.wallet_address,
        expires_at=issued.expires_at,
        message=issued.message,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def link_wallet(body: LinkIn, session: SessionDep, principal: CustomerKey, response: Response) -> WalletOut:
    """Add a wallet to the calling account, on its signature over a challenge from ``POST /v1/wallets/challenges``
    (201; 200 when it was linked to this account already)."""
    address, added = challenges.link(
        session,
        account_id=_account(principal),
        wallet_address=body.wallet_address,
        nonce=body.nonce,
        signature=body.signature,
        now=utcnow(),
    )
    if not added:
        response.status_code = status.HTTP_200_OK
    return _wallet_out(repo.wallet_by_address(session, address))


@router.delete("/{wallet_address}", status_code=status.HTTP_204_NO_CONTENT)
def unlink_wallet(wallet_address: str, session: SessionDep, principal: CustomerKey) -> None:
    """Remove a wallet from the calling account; the sessions it signed in for end with it."""
    challenges.unlink(session, account_id=_account(principal), wallet_address=wallet_address)


@admin_router.post("/{account_id}/wallets", status_code=status.HTTP_201_CREATED)
def bind_wallet(
    account_id: Id, body: BindIn, session: SessionDep, _platform: PlatformKey, response: Response
) -> WalletOut:
    """Bind a wallet to an existing account (an admin or platform key): 201, or 200 when it was bound to it
    already; a wallet of another account: 409 ``wallet_already_linked``."""
    require_customer_account(session, account_id)
    added = challenges.bind(
        session, account_id=account_id, wallet_address=body.wallet_address, linked_via=LinkedVia.ADMIN, now=utcnow()
    )
    if not added:
        response.status_code = status.HTTP_200_OK
    found = repo.wallet_by_address(session, normalize_wallet_address(body.wallet_address))
    return _wallet_out(found)


@admin_router.get("/{account_id}/wallets")
def account_wallets(
    account_id: Id, session: SessionDep, _platform: PlatformKey, cursor: Cursor = None, limit: Limit = 100
) -> WalletPage:
    """The wallets that act for an account (an admin or platform key), oldest first."""
    require_customer_account(session, account_id)
    return _page(session, account_id, cursor, limit)


ROUTERS = (router, admin_router)
