"""FastAPI dependencies, as ``Annotated`` aliases: the request's unit of work and who is calling.

``SessionDep`` opens one database transaction per request and commits it when the endpoint returns, before the
response is sent (``scope="function"``): a commit that fails is an error response, never a silent loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.apikeys.models import Role
from services.apikeys.service import Principal, authenticate
from services.core.db import unit_of_work
from services.core.errors import Forbidden, IdempotencyKeyRequired
from services.core.settings import Settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    with unit_of_work(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _bearer(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def get_principal(
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    return authenticate(session, _bearer(authorization, x_api_key))


CurrentKey = Annotated[Principal, Depends(get_principal)]


def get_principal_outside(
    engine: EngineDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """Authenticate in a short unit of work of its own, for endpoints that call the network (Stripe, a chain node)
    between their own units of work, so that no transaction is open while they wait."""
    with unit_of_work(engine) as session:
        return authenticate(session, _bearer(authorization, x_api_key))


def get_finance_outside(principal: Annotated[Principal, Depends(get_principal_outside)]) -> Principal:
    return get_finance(principal)


def _require(principal: Principal, *roles: str) -> Principal:
    if principal.role not in roles:
        raise Forbidden(f"this needs the {' or '.join(roles)} role", role=principal.role)
    return principal


def get_customer(principal: CurrentKey) -> Principal:
    _require(principal, Role.CUSTOMER)
    if principal.account_id is None:
        raise Forbidden("this key is not attached to an account")
    return principal


def get_admin(principal: CurrentKey) -> Principal:
    return _require(principal, Role.ADMIN)


def get_finance(principal: CurrentKey) -> Principal:
    return _require(principal, Role.FINANCE, Role.ADMIN)


CustomerKey = Annotated[Principal, Depends(get_customer)]
AdminKey = Annotated[Principal, Depends(get_admin)]
FinanceKey = Annotated[Principal, Depends(get_finance)]
FinanceOutside = Annotated[Principal, Depends(get_finance_outside)]

MAX_IDEMPOTENCY_KEY_LENGTH = 200


def get_idempotency_key(idempotency_key: Annotated[str | None, Header()] = None) -> str:
    """The ``Idempotency-Key`` header every retriable write requires."""
    if idempotency_key is None or not idempotency_key.strip():
        raise IdempotencyKeyRequired("the Idempotency-Key header is required", field="Idempotency-Key")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH or not idempotency_key.isprintable():
        raise IdempotencyKeyRequired(
            f"the Idempotency-Key header must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
            field="Idempotency-Key",
        )
    return idempotency_key


IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]
