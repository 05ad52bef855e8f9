"""API shapes for API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.api.pages import Page
from services.api.types import StrictId, Text


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Annotated[str, Field(pattern="^(customer|finance|admin)$")]
    account_id: StrictId | None = None
    name: Annotated[Text, Field(max_length=200)] = ""


class ApiKeyOut(BaseModel):
    id: int
    prefix: str
    role: str
    account_id: int | None
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class IssuedApiKeyOut(ApiKeyOut):
    # The secret, shown this once.
    key: str


ApiKeyPage = Page[ApiKeyOut]
