"""FastAPI dependencies, as ``Annotated`` aliases: the request's unit of work and who is calling.

``SessionDep`` opens one database transaction per request and commits it when the endpoint returns, before the
response is sent (``scope="function"``): a commit that fails is an error response, never a silent loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.api.principal import (
    SESSION_REFUSED_MESSAGE,
    ForbiddenForSession,
    Keys,
    Principal,
    Role,
    keys_of,
    signed_requests_of,
)
from services.core.db import unit_of_work
from services.core.errors import CreditrailError, Forbidden, IdempotencyKeyRequired, Unauthenticated
from services.core.settings import Settings

# Where the request guard (services.api.guard) leaves the principal it authenticated before the body was read.
PRINCIPAL_SCOPE_KEY = "creditrail.principal"
MAX_IDEMPOTENCY_KEY_LENGTH = 200


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_keys(request: Request) -> Keys:
    return keys_of(request.app)


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
KeysDep = Annotated[Keys, Depends(get_keys)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    with unit_of_work(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


_bearer_scheme = HTTPBearer(
    auto_error=False, description="An API key (`Authorization: Bearer cr_...`), or a customer session (`crs_...`)"
)
_header_scheme = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An API key, as a header of its own")
# Shown in the OpenAPI document so that an agent can sign its requests; the request guard checks them. The document
# gives the format the app's ``SignedRequests`` describes (services.api.openapi).
WALLET_SIGNATURE_SCHEME = "WalletSignature"
_wallet_scheme = APIKeyHeader(
    name="X-Wallet-Signature",
    scheme_name=WALLET_SIGNATURE_SCHEME,
    auto_error=False,
    description="A request signed by a wallet instead of carrying an API key, where the service takes them",
)


def _principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None,
    x_api_key: str | None,
    *,
    allow_session: bool,
) -> Principal:
    """The principal the request guard (``services.api.guard``) authenticated before the body was read; or, for an
    app without the guard, the key authenticated now, in a short unit of work of its own. A customer session is
    refused (403 ``forbidden_for_session``) unless the endpoint lets sessions in (``allow_session``)."""
    found = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(found, Principal):
        key = x_api_key or (bearer.credentials if bearer is not None else None)
        signed_requests = signed_requests_of(request.app)
        if (
            key is None
            and signed_requests is not None
            and signed_requests.is_signed({name.lower(): value for name, value in request.headers.items()})
        ):
            # A signature covers the body, which only the request guard reads before the endpoint runs.
            raise Unauthenticated("a request signed by a wallet is checked by the request guard, which is not in use")
        with unit_of_work(request.app.state.engine) as session:
            found = keys_of(request.app).authenticate(session, key)
    if found.is_session and not allow_session:
        raise ForbiddenForSession(SESSION_REFUSED_MESSAGE)
    return found


def get_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    x_api_key: Annotated[str | None, Depends(_header_scheme)],
    _wallet: Annotated[str | None, Depends(_wallet_scheme)],
) -> Principal:
    """An API key's principal (a customer session is refused: see ``CustomerOrSession``)."""
    return _principal(request, bearer, x_api_key, allow_session=False)


CurrentKey = Annotated[Principal, Depends(get_principal)]


def get_principal_outside(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    x_api_key: Annotated[str | None, Depends(_header_scheme)],
    _wallet: Annotated[str | None, Depends(_wallet_scheme)],
) -> Principal:
    """The same as ``get_principal``, for endpoints that call the network (Stripe, a chain node) between units of
    work of their own: no transaction is open while they wait (the key is never read inside the request's)."""
    return _principal(request, bearer, x_api_key, allow_session=False)


def _customer_of(principal: Principal) -> Principal:
    _require(principal, Role.CUSTOMER)
    if principal.account_id is None:
        raise Forbidden("this key is not attached to an account")
    return principal


def get_customer_or_session(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    x_api_key: Annotated[str | None, Depends(_header_scheme)],
    _wallet: Annotated[str | None, Depends(_wallet_scheme)],
) -> Principal:
    """A customer key or a customer session: the mark of an endpoint a person's session may use. Every other
    endpoint refuses sessions, so a new endpoint is closed to them unless it depends on this."""
    return _customer_of(_principal(request, bearer, x_api_key, allow_session=True))


def get_customer_or_session_outside(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    x_api_key: Annotated[str | None, Depends(_header_scheme)],
    _wallet: Annotated[str | None, Depends(_wallet_scheme)],
) -> Principal:
    """``get_customer_or_session`` for endpoints that call the network between units of work of their own."""
    return _customer_of(_principal(request, bearer, x_api_key, allow_session=True))


def api_key_of(headers: dict[str, str]) -> str | None:
    """The API key a request carries (``X-Api-Key``, or ``Authorization: Bearer <key>``)."""
    if x_api_key := headers.get("x-api-key"):
        return x_api_key
    authorization = headers.get("authorization")
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def customer_if_any(request: Request) -> Principal | None:
    """For a public page that also opens for its owner (a receipt): the customer key or session the request carries,
    or None when it carries none, or one that is not good (unknown, revoked, expired, not a customer's). Never an
    error: such a page answers the same whichever of these it was."""
    key = api_key_of({name.lower(): value for name, value in request.headers.items()})
    if not key:
        return None
    try:
        with unit_of_work(request.app.state.engine) as session:
            return _customer_of(keys_of(request.app).authenticate(session, key))
    except CreditrailError:
        return None


def get_current_session(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> Principal:
    """The calling customer session itself, a person's or a wallet's (an API key or a signed request is refused)."""
    principal = _principal(request, bearer, None, allow_session=True)
    if principal.session_id is None:
        raise Forbidden("this needs a customer session (Authorization: Bearer crs_...)")
    return principal


# The dependencies that authenticate an API key or session: the request guard checks it before reading the body of
# any route that depends on one of them.
AUTHENTICATING_DEPENDENCIES = (
    get_principal,
    get_principal_outside,
    get_customer_or_session,
    get_customer_or_session_outside,
    get_current_session,
)
# Those that let a customer session in: the guard refuses a session on any other route before reading its body.
SESSION_DEPENDENCIES = (get_customer_or_session, get_customer_or_session_outside, get_current_session)


def get_finance_outside(principal: Annotated[Principal, Depends(get_principal_outside)]) -> Principal:
    return get_finance(principal)


def _require(principal: Principal, *roles: str) -> Principal:
    if principal.role not in roles:
        raise Forbidden(f"this needs the {' or '.join(roles)} role", role=principal.role)
    return principal


def get_customer(principal: CurrentKey) -> Principal:
    """A customer API key (programs: charges, holds). People's sessions use ``CustomerOrSession`` endpoints."""
    return _customer_of(principal)


def get_admin(principal: CurrentKey) -> Principal:
    return _require(principal, Role.ADMIN)


def get_finance(principal: CurrentKey) -> Principal:
    return _require(principal, Role.FINANCE, Role.ADMIN)


def get_platform(principal: CurrentKey) -> Principal:
    """An admin key, or the platform's backend's key (customer sessions, webhook endpoints and events)."""
    return _require(principal, Role.ADMIN, Role.PLATFORM)


CustomerKey = Annotated[Principal, Depends(get_customer)]
AdminKey = Annotated[Principal, Depends(get_admin)]
FinanceKey = Annotated[Principal, Depends(get_finance)]
FinanceOutside = Annotated[Principal, Depends(get_finance_outside)]
PlatformKey = Annotated[Principal, Depends(get_platform)]
CustomerOrSession = Annotated[Principal, Depends(get_customer_or_session)]
CustomerOrSessionOutside = Annotated[Principal, Depends(get_customer_or_session_outside)]
CurrentSession = Annotated[Principal, Depends(get_current_session)]


def get_idempotency_key(idempotency_key: Annotated[str | None, Header()] = None) -> str:
    """The ``Idempotency-Key`` header every retriable write requires."""
    if idempotency_key is None or not idempotency_key.strip():
        raise IdempotencyKeyRequired("the Idempotency-Key header is required", field="Idempotency-Key")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH or not (
        idempotency_key.isascii() and idempotency_key.isprintable()
    ):
        raise IdempotencyKeyRequired(
            f"the Idempotency-Key header must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
            field="Idempotency-Key",
        )
    return idempotency_key


IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]
