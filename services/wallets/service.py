"""Wallets as identity: which customer account an EVM address acts for.

An address is kept lowercased (``0x`` and 40 hex digits): the checksum's mixed case is a spelling, not another
wallet. A wallet belongs to one account; an account may have several wallets. A wallet seen for the first time (its
first x402 purchase, its first sign-in) gets an account of its own, made and linked in the caller's transaction,
once however many requests see it at the same moment.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlmodel import Session

from services.ledger.accounts import create_customer_account
from services.wallets import repository as repo
from services.wallets.errors import InvalidWalletAddress
from services.wallets.models import LinkedVia

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


class _LinkedMeanwhile(Exception):
    """Another transaction linked the address first: the savepoint with our account in it is rolled back."""


def normalize_wallet_address(text: str) -> str:
    """``text`` as a wallet address: ``0x`` and 40 hex digits, lowercased. Anything else: 400
    ``invalid_wallet_address``. (Mixed case is accepted without checking it as an EIP-55 checksum: the signature
    that comes with the address proves it.)"""
    candidate = text.strip().lower() if isinstance(text, str) else ""
    if not _ADDRESS.fullmatch(candidate):
        raise InvalidWalletAddress("a wallet address is 0x followed by 40 hexadecimal digits", field="wallet_address")
    return candidate


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
