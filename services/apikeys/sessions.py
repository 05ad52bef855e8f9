"""Customer sessions: what a person's browser holds instead of an API key.

The platform that signed its user in asks for one (an admin or platform key), and hands its user the credits page's
URL with the token in the fragment. A token reads ``crs_<prefix>_<secret>``: shown once, stored as the SHA-256
digest of the whole token (a 256-bit random secret, like an API key), the prefix finding the row.

A session expires ``lifetime_seconds`` after it was last renewed. Each authenticated use renews it (``expires_at``
moves to now + lifetime), never past ``max_expires_at`` (creation + ``customer_session_max_age_seconds``), and
writes the renewal at most once a minute, so a busy page costs one write a minute, not one per request. It acts for
its one account as a customer, on the endpoints that say a session may use them (services.api.deps).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlmodel import Session

from services.apikeys.models import CustomerSession
from services.core.clock import utcnow
from services.core.db import table_of, utc
from services.core.errors import InvalidRequest, NotFound, Unauthenticated
from services.core.settings import Settings
from services.core.urls import outside_url_problem
from services.ledger.accounts import require_customer_account

customer_sessions = table_of(CustomerSession)

SESSION_PREFIX = "crs"
# Issued tokens are about 60 characters; anything much longer, or not printable ASCII, is not a token.
MAX_TOKEN_LENGTH = 200
MAX_RETURN_URL_LENGTH = 2048
# A session in use writes its renewal at most this often.
RENEW_EVERY = timedelta(seconds=60)


class SessionExpired(Unauthenticated):
    code = "session_expired"


class SessionRevoked(Unauthenticated):
    code = "session_revoked"


class CustomerSessionNotFound(NotFound):
    code = "customer_session_not_found"


@dataclass(frozen=True, slots=True)
class IssuedSession:
    id: int
    token: str  # shown once, never stored
    account_id: int
    expires_at: datetime
    max_expires_at: datetime
    return_url: str | None


@dataclass(frozen=True, slots=True)
class SessionView:
    id: int
    account_id: int
    expires_at: datetime
    return_url: str | None
    # The wallet that signed in for it (Sign-In-With-X), or None for a session a key created.
    wallet_id: int | None = None


def is_session_token(token: str) -> bool:
    return token.startswith(f"{SESSION_PREFIX}_")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_return_url(settings: Settings, return_url: str) -> str:
    """An absolute http(s) URL (https in production), with no credentials in it."""
    problem = outside_url_problem(settings, return_url, max_length=MAX_RETURN_URL_LENGTH)
    if problem is not None:
        raise InvalidRequest(f"return_url {problem}", field="return_url")
    return return_url


def create_session(
    session: Session,
    settings: Settings,
    *,
    account_id: int,
    created_by_key_id: int | None,
    wallet_id: int | None = None,
    return_url: str | None = None,
    lifetime_seconds: int | None = None,
    now: datetime | None = None,
) -> IssuedSession:
    lifetime = settings.customer_session_default_lifetime_seconds if lifetime_seconds is None else lifetime_seconds
    low, high = settings.customer_session_min_lifetime_seconds, settings.customer_session_max_lifetime_seconds
    if not low <= lifetime <= high:
        raise InvalidRequest(
            f"lifetime_seconds must be within {low}..{high}", field="lifetime_seconds", minimum=low, maximum=high
        )
    if return_url is not None:
        check_return_url(settings, return_url)
    if (created_by_key_id is None) == (wallet_id is None):
        raise ValueError("a session is created by a key or by a wallet's sign-in, one of the two")
    require_customer_account(session, account_id)
    now = now or utcnow()
    max_expires_at = now + timedelta(seconds=settings.customer_session_max_age_seconds)
    expires_at = min(now + timedelta(seconds=lifetime), max_expires_at)
    prefix = secrets.token_hex(6)
    token = f"{SESSION_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    session_id = session.execute(
        insert(customer_sessions)
        .values(
            prefix=prefix,
            token_sha256=_digest(token),
            account_id=account_id,
            created_by_key_id=created_by_key_id,
            wallet_id=wallet_id,
            return_url=return_url,
            lifetime_seconds=lifetime,
            created_at=now,
            renewed_at=now,
            expires_at=expires_at,
            max_expires_at=max_expires_at,
        )
        .returning(customer_sessions.c.id)
    ).scalar_one()
    return IssuedSession(int(session_id), token, account_id, expires_at, max_expires_at, return_url)


def authenticate_session(session: Session, token: str, now: datetime | None = None) -> SessionView:
    """The live session ``token`` names, renewed if its last renewal is a minute old or more. Unknown: 401
    ``unauthenticated``; revoked: ``session_revoked``; expired: ``session_expired`` (both with the page's
    ``return_url``, so the page can link back to the platform)."""
    parts = token.split("_", 2)
    if (
        len(token) > MAX_TOKEN_LENGTH
        or not (token.isascii() and token.isprintable())
        or len(parts) != 3
        or parts[0] != SESSION_PREFIX
    ):
        raise Unauthenticated("the session token is malformed")
    row = session.execute(select(customer_sessions).where(customer_sessions.c.prefix == parts[1])).first()
    if row is None or not hmac.compare_digest(row.token_sha256, _digest(token)):
        raise Unauthenticated("the session token is not valid")
    if row.revoked_at is not None:
        raise SessionRevoked("this session was signed out", return_url=row.return_url)
    now = now or utcnow()
    expires_at = utc(row.expires_at)
    if now >= expires_at:
        raise SessionExpired("this session has expired", return_url=row.return_url)
    renewed = min(now + timedelta(seconds=row.lifetime_seconds), utc(row.max_expires_at))
    if renewed > expires_at and now - utc(row.renewed_at) >= RENEW_EVERY:
        # Two requests renewing at once both write the same kind of value; whichever lands last stands.
        session.execute(
            update(customer_sessions).where(customer_sessions.c.id == row.id).values(expires_at=renewed, renewed_at=now)
        )
        expires_at = renewed
    return SessionView(row.id, row.account_id, expires_at, row.return_url, row.wallet_id)


def revoke_session(
    session: Session, session_id: int, *, account_id: int | None = None, now: datetime | None = None
) -> None:
    """Revoke a session at once (again: nothing changes). ``account_id``: only that account's (another's is not
    found)."""
    stmt = select(customer_sessions.c.id, customer_sessions.c.revoked_at).where(customer_sessions.c.id == session_id)
    if account_id is not None:
        stmt = stmt.where(customer_sessions.c.account_id == account_id)
    row = session.execute(stmt).first()
    if row is None:
        raise CustomerSessionNotFound(f"customer session {session_id} not found", session_id=session_id)
    if row.revoked_at is None:
        session.execute(
            update(customer_sessions).where(customer_sessions.c.id == session_id).values(revoked_at=now or utcnow())
        )


def get_session_view(session: Session, session_id: int) -> SessionView:
    row = session.execute(select(customer_sessions).where(customer_sessions.c.id == session_id)).first()
    if row is None:
        raise CustomerSessionNotFound(f"customer session {session_id} not found", session_id=session_id)
    return SessionView(row.id, row.account_id, utc(row.expires_at), row.return_url, row.wallet_id)


def delete_wallet_sessions(session: Session, wallet_id: int) -> None:
    """End every session a wallet signed in for, when the wallet leaves its account (their tokens become unknown)."""
    session.execute(delete(customer_sessions).where(customer_sessions.c.wallet_id == wallet_id))
