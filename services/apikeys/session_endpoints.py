"""Customer sessions over HTTP: the platform's backend creates and revokes them (an admin or platform key); the
session signs itself out, and tells the credits page where it came from."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel

from services.api.deps import CurrentSession, PlatformKey, SessionDep, SettingsDep
from services.api.types import Id
from services.apikeys import sessions
from services.apikeys.schemas import CustomerSessionIn, CustomerSessionOut
from services.core.urls import credits_page_url

router = APIRouter(prefix="/v1/admin/customer-sessions", tags=["admin"])
session_router = APIRouter(prefix="/v1/session", tags=["session"])


class CurrentSessionOut(BaseModel):
    id: int
    account_id: int
    expires_at: datetime
    return_url: str | None


@router.post("", status_code=status.HTTP_201_CREATED)
def create_customer_session(
    body: CustomerSessionIn, session: SessionDep, settings: SettingsDep, principal: PlatformKey
) -> CustomerSessionOut:
    """A session for one customer account. The token is shown this once; ``url`` is the credits page with the token
    in its fragment (``#session=...``), ready to hand to the customer's browser."""
    assert principal.key_id is not None  # an API key: PlatformKey refuses sessions
    issued = sessions.create_session(
        session,
        settings,
        account_id=body.account_id,
        created_by_key_id=principal.key_id,
        return_url=body.return_url,
        lifetime_seconds=body.lifetime_seconds,
    )
    return CustomerSessionOut(
        id=issued.id,
        token=issued.token,
        url=f"{credits_page_url(settings)}#session={issued.token}",
        expires_at=issued.expires_at,
        account_id=issued.account_id,
    )


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_customer_session(session_id: Id, session: SessionDep, _platform: PlatformKey) -> None:
    """Revoke a session at once (revoking it again changes nothing)."""
    sessions.revoke_session(session, session_id)


@session_router.get("")
def current_session(session: SessionDep, principal: CurrentSession) -> CurrentSessionOut:
    """The calling session: its account, when it expires (as just renewed) and the page to go back to."""
    assert principal.session_id is not None  # guaranteed by CurrentSession
    view = sessions.get_session_view(session, principal.session_id)
    return CurrentSessionOut(
        id=view.id, account_id=view.account_id, expires_at=view.expires_at, return_url=view.return_url
    )


@session_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(session: SessionDep, principal: CurrentSession) -> None:
    """Sign the calling session out: its token stops working at once."""
    assert principal.session_id is not None  # guaranteed by CurrentSession
    sessions.revoke_session(session, principal.session_id)


ROUTERS = (router, session_router)
