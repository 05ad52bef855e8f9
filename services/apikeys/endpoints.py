"""API keys over HTTP (admin only): issue (the secret is shown once), list, revoke."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, status

from services.api.deps import AdminKey, SessionDep
from services.api.pages import Cursor, id_cursor, page_of
from services.api.types import Id
from services.apikeys import service
from services.apikeys.schemas import ApiKeyIn, ApiKeyOut, ApiKeyPage, IssuedApiKeyOut

router = APIRouter(prefix="/v1/admin/api-keys", tags=["admin"])


@router.post("", status_code=status.HTTP_201_CREATED)
def issue_key(body: ApiKeyIn, session: SessionDep, _admin: AdminKey) -> IssuedApiKeyOut:
    return IssuedApiKeyOut(
        **asdict(service.issue_key(session, role=body.role, account_id=body.account_id, name=body.name))
    )


@router.get("")
def list_keys(
    session: SessionDep,
    _admin: AdminKey,
    account_id: Id | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ApiKeyPage:
    """API keys (never their secrets), oldest first; ``account_id`` keeps one account's."""
    keys = service.list_keys(session, account_id, after_id=id_cursor(cursor) or 0, limit=limit + 1)
    return page_of([ApiKeyOut.model_validate(key, from_attributes=True) for key in keys], limit, lambda key: key.id)


@router.post("/{key_id}/revoke", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(key_id: Id, session: SessionDep, _admin: AdminKey) -> None:
    """Revoke a key at once. The last admin key that is not revoked cannot be (409 ``last_admin_key``)."""
    service.revoke_key(session, key_id)
