"""API keys: created by an admin, shown once, stored as a digest, revocable.

A key reads ``cr_<prefix>_<secret>``: the prefix finds the row, the SHA-256 digest of the whole key is compared in
constant time. Keys are 256-bit random secrets, so a fast digest is the right tool (no password stretching).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import insert, select, update
from sqlmodel import Session

from services.apikeys.models import ApiKey, Role
from services.apikeys.sessions import authenticate_session, is_session_token
from services.core.clock import utcnow
from services.core.db import table_of
from services.core.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from services.ledger.accounts import require_customer_account

api_keys = table_of(ApiKey)
KEY_PREFIX = "cr"
# Issued keys are about 60 characters; anything much longer, or not printable ASCII, is not a key.
MAX_KEY_LENGTH = 200


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class LastAdminKey(Conflict):
    code = "last_admin_key"


class PrincipalKind(StrEnum):
    API_KEY = "api_key"
    SESSION = "session"
    # A wallet: a request it signed (services.wallets.signed_requests), or a session it signed in for (Sign-In-With-X).
    # Either acts for the wallet's account as a customer key does.
    WALLET = "wallet"
    WALLET_SESSION = "wallet_session"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key (its id, role and, for customer keys, account), a customer session (its id and
    account, acting with the customer role on the endpoints that let sessions in: services.api.deps), or a wallet
    (a signed request, or a session the wallet signed in for), acting for its account as a customer key does."""

    key_id: int | None
    role: str
    account_id: int | None
    kind: PrincipalKind = PrincipalKind.API_KEY
    session_id: int | None = None
    wallet_id: int | None = None

    @property
    def is_session(self) -> bool:
        """A person's session, limited to the endpoints that let sessions in (a wallet's session is not)."""
        return self.kind == PrincipalKind.SESSION


@dataclass(frozen=True, slots=True)
class IssuedKey:
    id: int
    key: str  # shown once, never stored
    prefix: str
    role: str
    account_id: int | None
    name: str
    created_at: datetime


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(
    session: Session, *, role: str, account_id: int | None, name: str = "", now: datetime | None = None
) -> IssuedKey:
    if role not in set(Role):
        raise InvalidRequest(f"role must be one of {sorted(Role)}", field="role")
    if role == Role.CUSTOMER:
        if account_id is None:
            raise InvalidRequest("a customer key needs an account", field="account_id")
        require_customer_account(session, account_id)
    elif account_id is not None:
        raise InvalidRequest(f"a {role} key does not belong to an account", field="account_id")
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    now = now or utcnow()
    key_id = session.execute(
        insert(api_keys)
        .values(prefix=prefix, secret_sha256=_digest(key), role=role, account_id=account_id, name=name, created_at=now)
        .returning(api_keys.c.id)
    ).scalar_one()
    return IssuedKey(int(key_id), key, prefix, role, account_id, name, now)


def authenticate(session: Session, key: str | None) -> Principal:
    """The principal an API key or a customer session token (``crs_...``) stands for."""
    if not key:
        raise Unauthenticated("an API key is required (Authorization: Bearer <key>)")
    if is_session_token(key):
        found = authenticate_session(session, key)
        return Principal(
            key_id=None,
            role=Role.CUSTOMER,
            account_id=found.account_id,
            kind=PrincipalKind.SESSION if found.wallet_id is None else PrincipalKind.WALLET_SESSION,
            session_id=found.id,
            wallet_id=found.wallet_id,
        )
    parts = key.split("_", 2)
    if (
        len(key) > MAX_KEY_LENGTH
        or not (key.isascii() and key.isprintable())
        or len(parts) != 3
        or parts[0] != KEY_PREFIX
    ):
        raise Unauthenticated("the API key is malformed")
    row = session.execute(select(api_keys).where(api_keys.c.prefix == parts[1])).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(key)):
        raise Unauthenticated("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthenticated("the API key was revoked")
    return Principal(key_id=row.id, role=row.role, account_id=row.account_id)


def revoke_key(session: Session, key_id: int, now: datetime | None = None) -> None:
    """Revoke a key. The last admin key left is refused, so that the service always keeps a way in (the admin keys
    are locked first, so two admins revoking each other's keys at once cannot both succeed)."""
    row = session.execute(
        select(api_keys.c.id, api_keys.c.role, api_keys.c.revoked_at).where(api_keys.c.id == key_id)
    ).first()
    if row is None:
        raise ApiKeyNotFound(f"API key {key_id} not found", key_id=key_id)
    if row.revoked_at is not None:
        return
    if row.role == Role.ADMIN:
        admins = session.execute(
            select(api_keys.c.id)
            .where(api_keys.c.role == Role.ADMIN, api_keys.c.revoked_at.is_(None))
            .order_by(api_keys.c.id)
            .with_for_update()
        ).all()
        if [admin.id for admin in admins] == [key_id]:
            raise LastAdminKey("this is the last admin key: issue another before revoking it", key_id=key_id)
    session.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now or utcnow()))


def list_keys(
    session: Session, account_id: int | None = None, *, after_id: int = 0, limit: int | None = None
) -> list[ApiKey]:
    stmt = select(api_keys).where(api_keys.c.id > after_id).order_by(api_keys.c.id)
    if account_id is not None:
        stmt = stmt.where(api_keys.c.account_id == account_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [ApiKey.model_validate(dict(row._mapping)) for row in session.execute(stmt)]
