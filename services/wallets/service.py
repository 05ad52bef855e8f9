"""Wallets as identity: which customer account an EVM address acts for.

An address is kept lowercased (``0x`` and 40 hex digits): the checksum's mixed case is a spelling, not another
wallet. A wallet belongs to one account; an account may have several wallets. A wallet seen for the first time (its
first x402 purchase, its first sign-in) gets an account of its own, made and linked in the caller's transaction,
once however many requests see it at the same moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from services.api.principal import Principal, PrincipalKind, Role
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.wallets import repository as repo
from services.wallets.addresses import normalize_wallet_address
from services.wallets.errors import WalletNonceReused, WalletUnknown
from services.wallets.models import LinkedVia
from services.wallets.signed_requests import (
    SIGNED_REQUEST_DESCRIPTION,
    WalletHeaders,
    check_window,
    is_wallet_signed,
    read_wallet_headers,
    verify_signature,
)

__all__ = [
    "WalletSignedRequests",
    "account_for_wallet",
    "authenticate_signed_request",
    "normalize_wallet_address",
    "principal_of_wallet",
]


class _LinkedMeanwhile(Exception):
    """Another transaction linked the address first: the savepoint with our account in it is rolled back."""


def account_for_wallet(
    session: Session,
    address: str,
    *,
    now: datetime,
    create: bool,
    linked_via: LinkedVia = LinkedVia.PURCHASE,
) -> int | None:
    """The account the wallet ``address`` belongs to. Unknown: None, or with ``create`` a new customer account
    (named after the address) linked to it, ``linked_via`` saying how (a purchase unless told otherwise).

    Race-safe: the link is an insert that yields to the unique address. The account and the link are made under a
    savepoint; when another transaction linked the address first (PostgreSQL waits for it to commit), the
    savepoint is rolled back, so no account is left without its wallet, and the winner's account is answered."""
    address = normalize_wallet_address(address)
    found = repo.account_of_address(session, address)
    while found is None and create:
        try:
            with session.begin_nested():
                account_id = create_customer_account(session, name=address, now=now)
                if repo.insert_wallet(session, address=address, account_id=account_id, linked_via=linked_via, now=now):
                    return account_id
                raise _LinkedMeanwhile
        except _LinkedMeanwhile:
            # Linked by the transaction we waited for (or, should it have been unlinked since, made again).
            found = repo.account_of_address(session, address)
    return found


def principal_of_wallet(session: Session, address: str) -> Principal:
    """The principal a wallet that proved itself acts as: its account, as a customer key does. A wallet with no
    account yet: 403 ``wallet_unknown`` (its first purchase or sign-in makes one)."""
    wallet = repo.wallet_by_address(session, address)
    if wallet is None:
        raise WalletUnknown(
            "this wallet has no account yet: buy credits or sign in with it first", wallet_address=address
        )
    return Principal(
        key_id=None,
        role=Role.CUSTOMER,
        account_id=int(wallet.account_id),
        kind=PrincipalKind.WALLET,
        wallet_id=int(wallet.id),
    )


def authenticate_signed_request(session: Session, found: WalletHeaders, *, now: datetime) -> Principal:
    """The principal of a request whose signature was verified: the wallet's account, once per nonce (a nonce
    this wallet used before: 401 ``wallet_nonce_reused``). Nothing is written for a wallet with no account."""
    principal = principal_of_wallet(session, found.address)
    if not repo.use_request_nonce(
        session, address=found.address, nonce=found.nonce, signed_at=found.signed_at, now=now
    ):
        raise WalletNonceReused("this nonce was used before by this wallet: sign each request with a new one")
    return principal


@dataclass(frozen=True, slots=True)
class _SignedRequest:
    """A signed request whose headers passed ``WalletSignedRequests.precheck``."""

    headers: WalletHeaders

    def verify(self, *, method: str, path_and_query: str, body: bytes) -> None:
        verify_signature(self.headers, method=method, path_and_query=path_and_query, body=body)

    def authenticate(self, session: Session, *, now: datetime) -> Principal:
        return authenticate_signed_request(session, self.headers, now=now)


class WalletSignedRequests:
    """Requests signed by a wallet (services.wallets.signed_requests), as the app's
    ``services.api.principal.SignedRequests``, with the settings' timestamp window."""

    def __init__(self, settings: Settings) -> None:
        self.window_seconds = settings.wallet_signature_window_seconds

    @property
    def description(self) -> str:
        return SIGNED_REQUEST_DESCRIPTION

    def is_signed(self, headers: Mapping[str, str]) -> bool:
        return is_wallet_signed(headers)

    def precheck(self, headers: Mapping[str, str], *, now: datetime) -> _SignedRequest:
        found = read_wallet_headers(headers)
        check_window(found, now=now, window_seconds=self.window_seconds)
        return _SignedRequest(found)
