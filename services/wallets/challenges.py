"""What a wallet signs to sign in (Sign-In-With-X) or to join an account (a link proof), and checking it.

Both begin with a nonce we issue (``wallet_challenges``), good for ``wallet_challenge_lifetime_seconds`` and used
once: it is spent by one conditional write, so two requests carrying the same signed message cannot both succeed.

- Sign-in: the wallet signs an EIP-4361 message naming our domain and URI (from ``CREDITRAIL_PUBLIC_BASE_URL``), the
  nonce, when it was issued and when it expires. A good one answers a short-lived session (``crs_...``) for the
  wallet's account, made on the wallet's first sign-in; it acts as a customer key does.
- Link: an authenticated customer asks for a challenge naming its account and the wallet to add; the wallet signs
  the challenge's text, and the wallet joins the account.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlmodel import Session

from services.apikeys.sessions import IssuedSession, create_session, delete_wallet_sessions
from services.core.db import utc
from services.core.errors import Unauthenticated
from services.core.settings import Settings
from services.core.urls import public_base_url
from services.wallets import repository as repo
from services.wallets.addresses import normalize_wallet_address
from services.wallets.errors import WalletAlreadyLinked, WalletNotLinked
from services.wallets.models import ChallengePurpose, LinkedVia
from services.wallets.service import account_for_wallet
from services.wallets.signed_requests import InvalidWalletSignature, recover_signer
from services.wallets.siwx import SiwxMessage, format_message, parse_message, timestamp_text

SIGN_IN_STATEMENT = "Sign in to creditrail with this wallet."
LINK_TITLE = "creditrail: link this wallet to an account"


class SiwxDomainMismatch(Unauthenticated):
    code = "siwx_domain_mismatch"


class SiwxExpired(Unauthenticated):
    code = "siwx_expired"


class ChallengeInvalid(Unauthenticated):
    """A nonce we did not issue for this, or that expired, or that was used already."""

    code = "challenge_invalid"


@dataclass(frozen=True, slots=True)
class SignInChallenge:
    domain: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime
    statement: str
    # The exact text to sign, when the wallet's address was given.
    message: str | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    session: IssuedSession
    wallet_address: str
    wallet_id: int
    created_account: bool


@dataclass(frozen=True, slots=True)
class LinkChallenge:
    nonce: str
    account_id: int
    wallet_address: str
    expires_at: datetime
    message: str


def our_domain_and_uri(settings: Settings) -> tuple[str, str]:
    """The domain (host and port) and URI a sign-in message must name: the public base URL's."""
    base = public_base_url(settings)
    return urlsplit(base).netloc, base


def _new_nonce() -> str:
    return secrets.token_hex(16)  # 32 letters and digits, as EIP-4361 wants


def issue_sign_in(
    session: Session, settings: Settings, *, now: datetime, chain_id: int, wallet_address: str | None
) -> SignInChallenge:
    domain, uri = our_domain_and_uri(settings)
    nonce = _new_nonce()
    now = now.replace(microsecond=0)
    expires_at = now + timedelta(seconds=settings.wallet_challenge_lifetime_seconds)
    repo.insert_challenge(
        session, nonce=nonce, purpose=ChallengePurpose.SIGN_IN, account_id=None, now=now, expires_at=expires_at
    )
    message = None
    if wallet_address is not None:
        message = format_message(
            SiwxMessage(
                domain=domain,
                address=normalize_wallet_address(wallet_address),
                uri=uri,
                chain_id=chain_id,
                nonce=nonce,
                issued_at=now,
                statement=SIGN_IN_STATEMENT,
                expiration_time=expires_at,
            )
        )
    return SignInChallenge(domain, uri, chain_id, nonce, now, expires_at, SIGN_IN_STATEMENT, message)


def sign_in(session: Session, settings: Settings, *, message_text: str, signature: str, now: datetime) -> SignedIn:
    """Check a signed EIP-4361 message (ours, in time, its nonce ours and unused, signed by its address) and answer a
    session for the wallet's account, made on its first sign-in."""
    message = parse_message(message_text)
    domain, uri = our_domain_and_uri(settings)
    if message.domain != domain:
        raise SiwxDomainMismatch(f"the message must name the domain {domain}", expected=domain)
    if urlsplit(message.uri)[:2] != urlsplit(uri)[:2]:
        raise SiwxDomainMismatch(f"the message's URI must be under {uri}", expected=uri)
    skew = timedelta(seconds=settings.wallet_signature_window_seconds)
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SiwxExpired("the message has expired")
    if message.not_before is not None and message.not_before > now + skew:
        raise SiwxExpired("the message is not valid yet (Not Before)")
    if message.issued_at > now + skew:
        raise SiwxExpired("the message was issued in the future (Issued At)")
    address = normalize_wallet_address(message.address)
    if recover_signer(message_text, signature) != address:
        raise InvalidWalletSignature("the signature does not recover the message's address")
    challenge = repo.use_challenge(session, nonce=message.nonce, purpose=ChallengePurpose.SIGN_IN, now=now)
    if challenge is None:
        raise ChallengeInvalid("the message's nonce was not issued by us, has expired or was used already")
    known = repo.wallet_by_address(session, address)
    account_id = account_for_wallet(session, address, now=now, create=True, linked_via=LinkedVia.SIGN_IN)
    assert account_id is not None  # made when missing
    wallet = repo.wallet_by_address(session, address)
    issued = create_session(
        session,
        settings,
        account_id=account_id,
        created_by_key_id=None,
        wallet_id=int(wallet.id),
        lifetime_seconds=settings.wallet_session_lifetime_seconds,
        now=now,
    )
    return SignedIn(issued, address, int(wallet.id), created_account=known is None)


def link_text(*, account_id: int, wallet_address: str, nonce: str, expires_at: datetime) -> str:
    """The text a wallet signs (EIP-191 personal-sign) to join an account."""
    return "\n".join(
        [
            LINK_TITLE,
            f"Account: {account_id}",
            f"Wallet: {wallet_address}",
            f"Nonce: {nonce}",
            f"Expires At: {timestamp_text(expires_at)}",
        ]
    )


def issue_link(
    session: Session, settings: Settings, *, account_id: int, wallet_address: str, now: datetime
) -> LinkChallenge:
    address = normalize_wallet_address(wallet_address)
    _refuse_if_linked_elsewhere(session, address, account_id)
    nonce = _new_nonce()
    now = now.replace(microsecond=0)
    expires_at = now + timedelta(seconds=settings.wallet_challenge_lifetime_seconds)
    repo.insert_challenge(
        session, nonce=nonce, purpose=ChallengePurpose.LINK, account_id=account_id, now=now, expires_at=expires_at
    )
    text = link_text(account_id=account_id, wallet_address=address, nonce=nonce, expires_at=expires_at)
    return LinkChallenge(nonce, account_id, address, expires_at, text)


def _refuse_if_linked_elsewhere(session: Session, address: str, account_id: int) -> bool:
    """Whether ``address`` is linked to ``account_id`` already; linked to another account: 409
    ``wallet_already_linked``."""
    linked_to = repo.account_of_address(session, address)
    if linked_to is not None and linked_to != account_id:
        raise WalletAlreadyLinked("this wallet belongs to another account", wallet_address=address)
    return linked_to == account_id


def link(
    session: Session, *, account_id: int, wallet_address: str, nonce: str, signature: str, now: datetime
) -> tuple[str, bool]:
    """Add a wallet to ``account_id`` on the proof it signed over a link challenge issued to that account; the
    address and whether it was added now (False: it was linked to this account already)."""
    address = normalize_wallet_address(wallet_address)
    found = repo.challenge_by_nonce(session, nonce)
    if found is None or found.purpose != ChallengePurpose.LINK or found.account_id != account_id:
        raise ChallengeInvalid("this nonce was not issued to this account for linking a wallet")
    text = link_text(account_id=account_id, wallet_address=address, nonce=nonce, expires_at=utc(found.expires_at))
    if recover_signer(text, signature) != address:
        raise InvalidWalletSignature("the signature does not recover the wallet's address over the challenge")
    if repo.use_challenge(session, nonce=nonce, purpose=ChallengePurpose.LINK, now=now) is None:
        raise ChallengeInvalid("this challenge has expired or was used already")
    return address, bind(session, account_id=account_id, wallet_address=address, linked_via=LinkedVia.LINK, now=now)


def bind(session: Session, *, account_id: int, wallet_address: str, linked_via: LinkedVia, now: datetime) -> bool:
    """Link ``wallet_address`` to ``account_id``; whether it was added now (False: linked to it already). Linked to
    another account: 409 ``wallet_already_linked``."""
    address = normalize_wallet_address(wallet_address)
    if _refuse_if_linked_elsewhere(session, address, account_id):
        return False
    if repo.insert_wallet(session, address=address, account_id=account_id, linked_via=linked_via, now=now) is None:
        # Linked by another transaction meanwhile: to this account, the same outcome; to another, the conflict.
        _refuse_if_linked_elsewhere(session, address, account_id)
        return False
    return True


def unlink(session: Session, *, account_id: int, wallet_address: str) -> str:
    """Remove a wallet from ``account_id`` (not linked to it: 404 ``wallet_not_linked``); the sessions it signed in
    for end with it. Its address; seen again, it is a new wallet (its next purchase or sign-in makes an account)."""
    address = normalize_wallet_address(wallet_address)
    wallet = repo.wallet_by_address(session, address)
    if wallet is None or wallet.account_id != account_id:
        raise WalletNotLinked("this wallet is not linked to this account", wallet_address=address)
    delete_wallet_sessions(session, int(wallet.id))
    repo.delete_wallet(session, address=address, account_id=account_id)
    return address
