"""Who is calling, as every endpoint sees it: a ``Principal`` with a ``Role``, and the ``Keys`` and
``SignedRequests`` the app asks to authenticate one.

The HTTP kit checks roles but keeps no keys: ``services.apikeys`` stores API keys and customer sessions and
implements ``Keys``; ``services.wallets`` checks requests signed by a wallet and implements ``SignedRequests``; the
top floor hands them to the app (``app.state.keys``, ``app.state.signed_requests``), so the kit, below every domain,
imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlmodel import Session

from services.core.errors import Forbidden


class Role(StrEnum):
    CUSTOMER = "customer"
    FINANCE = "finance"
    ADMIN = "admin"
    # The platform's backend: customer sessions, webhook endpoints and events, nothing else.
    PLATFORM = "platform"


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


class ForbiddenForSession(Forbidden):
    code = "forbidden_for_session"


SESSION_REFUSED_MESSAGE = "a customer session cannot use this endpoint (it is for API keys)"


class Keys(Protocol):
    """What the app needs of API keys and customer sessions, in the caller's session."""

    def authenticate(self, session: Session, key: str | None) -> Principal:
        """The principal an API key or a customer session token stands for (``Unauthenticated`` otherwise)."""
        ...

    def account_of_key(self, session: Session, key_id: int) -> int | None:
        """The account an API key belongs to; None for an unknown key or one of no account."""
        ...


def keys_of(app: Any) -> Keys:
    """The ``Keys`` the top floor gave the app (a Starlette app, typed loosely as the kit's other helpers are)."""
    keys: Keys = app.state.keys
    return keys


class SignedRequest(Protocol):
    """A request signed by a wallet whose headers have their form and whose timestamp is within the window: what is
    left to check needs its body (the signature) and the database (the nonce)."""

    def verify(self, *, method: str, path_and_query: str, body: bytes) -> None:
        """Refuse (401) unless the signature covers this request as received (its path with the query as sent)."""
        ...

    def authenticate(self, session: Session, *, now: datetime) -> Principal:
        """The signer's principal, its nonce spent in the caller's session (401 for a nonce used before)."""
        ...


class SignedRequests(Protocol):
    """What the app needs of requests a wallet signs instead of carrying a key (checked by the request guard,
    services.api.guard, since the signature covers the body)."""

    @property
    def description(self) -> str:
        """The signed request's format, as the OpenAPI document tells it."""
        ...

    def is_signed(self, headers: Mapping[str, str]) -> bool:
        """Whether a request (its headers, names lowercased) means to be signed by a wallet."""
        ...

    def precheck(self, headers: Mapping[str, str], *, now: datetime) -> SignedRequest:
        """The request's signature headers, checked for form and timestamp without the body or the database (401
        otherwise)."""
        ...


def signed_requests_of(app: Any) -> SignedRequests | None:
    """The ``SignedRequests`` the top floor gave the app; None for an app that takes no signed request (its callers
    then need a key)."""
    found: SignedRequests | None = getattr(app.state, "signed_requests", None)
    return found
