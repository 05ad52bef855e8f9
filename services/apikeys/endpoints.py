"""API keys over HTTP (admin only): issue (the secret is shown once), list, revoke."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, status

from services.api.deps import AdminKey, SessionDep
from services.apikeys import service
from services.apikeys.schemas import ApiKeyIn, ApiKeyOut, IssuedApiKeyOut

router = APIRouter(prefix="/v1/admin/api-keys", tags=["admin"])


@router.post("", status_code=status.HTTP_201_CREATED)
def issue_key(body: ApiKeyIn, session: SessionDep, _admin: AdminKey) -> IssuedApiKeyOut:
    return IssuedApiKeyOut(
        **asdict(service.issue_key(session, role=body.role, account_id=body.account_id, name=body.name))
    )


@router.get("")
def list_keys(session: SessionDep, _admin: AdminKey, account_id: int | None = None) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(key, from_attributes=True) for key in service.list_keys(session, account_id)]


@router.post("/{key_id}/revoke", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(key_id: int, session: SessionDep, _admin: AdminKey) -> None:
    service.revoke_key(session, key_id)
